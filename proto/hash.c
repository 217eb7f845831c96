/* hash.c - FNV-1a 64, the one fast non-cryptographic hash of the tree (the
 * doc_keys of long ids, the FAISS file checksum); proto.h. */
#include "proto.h"

uint64_t proto_fnv1a64(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}
