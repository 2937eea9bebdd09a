"""The overlay's bit-exact software twin: reference ops (the spec), fast ops, the device."""
