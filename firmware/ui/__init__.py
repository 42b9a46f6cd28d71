"""The phone's screens and key logic (sans-IO): key and call events in, LCD/LED/ringer/audio-path
state and call actions out. See `firmware.ui.phone.PhoneUI`."""
