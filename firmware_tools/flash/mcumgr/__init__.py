"""flash-model on stock Zephyr/MCUmgr nodes: capabilities, the fs-group and image-group paths.

Nothing here imports :mod:`firmware_tools.sim`: these modules talk to any MCUmgr node, ours
or a stock Zephyr one, over the SMP console framing (serial port, USB CDC-ACM, or an
emulator's ``socket://`` UART).
"""
