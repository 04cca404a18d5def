# Kernel of the `lego` feature semantics (see _legostats.pyx and legostats_spec.py).
# The table layout and the statistics are private to _legostats.pyx; what other
# kernels may cimport is declared here.

from libc.stdint cimport uint8_t, uint64_t

# Hash of a key of kw uint64 words (splitmix64 chained over the words).
cdef uint64_t hash_key(const uint64_t* key, Py_ssize_t kw, uint64_t seed) noexcept nogil

# Owner bucket of a derived address, as the switch computes it:
# zlib.crc32([family][16 address bytes]) % 1024.
cdef Py_ssize_t owner_bucket(uint8_t family, const uint8_t* addr) noexcept nogil
