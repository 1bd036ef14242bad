"""The channels notify delivers through: SMTP, an SMS provider, signed webhooks, the console."""
