"""payment_center: the payment aggregate and its saga (risk decision, channel, result)."""
