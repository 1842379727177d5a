"""Payment channel adapters used by the gateway.

`alipay_protocol` is deliberately free of I/O so the PSP simulator can share it.
"""

from services.gateway.channels.alipay import AlipayChannel
from services.gateway.channels.base import (
    ChannelAdapter,
    ChannelError,
    ChannelRejected,
    ChannelUnavailable,
    InvalidNotification,
    PreparedTrade,
    VerifiedPaymentNotification,
)

__all__ = [
    "AlipayChannel",
    "ChannelAdapter",
    "ChannelError",
    "ChannelRejected",
    "ChannelUnavailable",
    "InvalidNotification",
    "PreparedTrade",
    "VerifiedPaymentNotification",
]
