"""Type stub of the compiled Huffman decoder (built from _ext/huffman.pyx); same names and
behaviour as gateway/push/huffman.py. Import it through gateway.push.headerblock."""

def decode_huffman(data: bytes) -> bytes: ...
