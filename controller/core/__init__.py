"""The pure decision core: value types, the interfaces between layers, the capacity model, guards and the
decision step. No I/O, no clock (``now`` is an argument), no SDK."""
