"""The channel connector: the gateway's process for channels, the bank rail and their
callbacks (see app.py)."""
