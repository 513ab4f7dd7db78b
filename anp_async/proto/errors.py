"""The one error every parser raises for malformed input."""


class ParseError(ValueError):
    """A packet is malformed (truncated, bad length, bad checksum, bad option).

    The layer below catches it, counts the drop under ``reason`` and discards the packet.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
