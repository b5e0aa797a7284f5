"""sip-push-gateway: keeps SIP registrations alive for sleeping phones and wakes them by push."""

__version__ = "0.1.0"
