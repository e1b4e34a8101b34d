"""mailhook: an SMTP content filter that gives calendar invitations a TrueConf conference."""

__version__ = "0.1.0"
