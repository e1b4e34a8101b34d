"""The ways mail comes into mailhook. Each front end speaks its protocol and hands every
message to the one flow (``mailhook.flow``); none of them decides or acts on anything."""
