"""The overlay's bit-exact software twin: reference ops (the spec), two serving paths, device."""
