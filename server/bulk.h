/* bulk.h - bulk vectors: a large corpus is embedded on a GPU machine, not
 * by the server. `retro chunks` writes the corpus's chunks as the encoder
 * sees them (a JSON Lines chunks file); model/train/embed_chunks.py embeds
 * them with the PyTorch reference encoder into a vectors file; `retro index
 * --vectors` then indexes the corpus through the ordinary ingest pipeline
 * with those vectors in place of the encoder's. Both formats are described
 * in docs/OPERATIONS.md ("Bulk vectors").
 *
 * The chunks and the vectors are matched by order (the corpus reader's,
 * corpus.h), checked before anything is written: the vectors file carries
 * the encoder's fingerprint, the dimension, the count and a SHA-256 digest
 * of every chunk's encoder input, and `retro index --vectors` refuses a file
 * whose fingerprint, dimension, count or digest differs from the database's
 * encoder and the corpus it reads. */
#ifndef RETRO_BULK_H
#define RETRO_BULK_H

#include "corpus.h"
#include "srv.h"

#include <signal.h>

/* Writes the chunks of every document of c to path (through path.tmp,
 * renamed when complete); progress on stderr unless quiet. Returns the
 * exit status (0; 1 when a document failed or the file could not be
 * written, after printing why). */
int bulk_write_chunks(srv_engine *e, const corpus *c, const char *path, int quiet,
                      volatile sig_atomic_t *stop);

typedef struct bulk_vectors bulk_vectors;

/* Opens a vectors file for indexing c into e: checks its header against e's
 * encoder and its count and digest against c's chunks (reading the whole
 * corpus once). Returns 0, or 1 after printing why (nothing written). */
int bulk_vectors_open(srv_engine *e, const corpus *c, const char *path, bulk_vectors **out);
/* srv_ingest_callbacks.take_vectors: the next n vectors, L2-normalised;
 * PROTO_ERANGE (that document fails, the file stays in step) for a vector
 * that is not finite or is zero, PROTO_EIO when the file cannot be read. */
proto_status bulk_take_vectors(void *bulk, uint32_t n, float *out);
/* Closes; when complete (the whole corpus was read) checks that every
 * vector was taken. Returns 0, or 1 after printing why. Accepts NULL. */
int bulk_vectors_close(bulk_vectors *bv, int complete);

#endif
