/* st.h - safetensors files, read-only, mmap'd (private to model/).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 * {str: str}}, then the tensor bytes (offsets relative to the end of the
 * header). st_open validates the whole header up front: JSON syntax, known
 * dtypes, shapes (non-negative, product * element size == end - begin),
 * offsets inside the file, no two tensors overlapping. A bad file is
 * PROTO_ECORRUPT (or PROTO_EIO) and st_last_error() names the file and the
 * tensor; nothing is read past the end of the mapping.
 *
 * Float access: st_get_f32 returns float32 views. F32 tensors (4-byte aligned
 * in the file, which is the norm) point straight into the mapping (no copy,
 * RSS ~ file size); F16 and BF16 are converted once, on first request, into a
 * buffer owned by the st_file and reused by later requests.
 *
 * Thread-safety: after st_open, all functions may be called from any number
 * of threads at once (conversion is done under an internal lock). Pointers
 * returned stay valid until st_close.
 */
#ifndef RETRO_ST_H
#define RETRO_ST_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

typedef struct st_file st_file;

enum { ST_MAX_DIMS = 8 };

typedef enum st_dtype {
  ST_F32 = 0,
  ST_F16,
  ST_BF16,
  ST_F64,
  ST_I64,
  ST_I32,
  ST_I16,
  ST_I8,
  ST_U8,
  ST_BOOL,
  ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor_info {
  const char *name; /* borrowed, lives as long as the file */
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  size_t nbytes;
  const void *data; /* raw little-endian bytes inside the mapping */
} st_tensor_info;

/* Maps and validates path. On failure *out is NULL and st_last_error() says
 * why ("<path>: tensor 'x': data_offsets [a, b] past end of file (n bytes)"). */
proto_status st_open(const char *path, st_file **out);
void st_close(st_file *f); /* accepts NULL */
/* This thread's last failure detail; never NULL. */
const char *st_last_error(void);

const char *st_path(const st_file *f);
size_t st_count(const st_file *f);
/* i-th tensor in file order of data offset (0 <= i < st_count). */
const st_tensor_info *st_at(const st_file *f, size_t i);
/* Tensor by name or NULL when absent. */
const st_tensor_info *st_find(const st_file *f, const char *name);
/* "__metadata__" value for key, or NULL. Borrowed. */
const char *st_metadata(const st_file *f, const char *key);
const char *st_dtype_name(st_dtype d); /* "F32", ... */

/* float32 view of tensor name, which must be F32, F16 or BF16 and have
 * exactly ndim dimensions equal to shape (a shape entry of -1 accepts any
 * size). *out (row-major, shape as in the file) is borrowed from f.
 * Errors: PROTO_ENOTFOUND (missing), PROTO_EDIM (wrong ndim/shape),
 * PROTO_ETYPE (non-float dtype), PROTO_ENOMEM; message names file + tensor. */
proto_status st_get_f32(st_file *f, const char *name, int ndim, const int64_t *shape,
                        const float **out);
/* Whether v, the float32 view st_get_f32 gave of tensor name, holds only
 * finite numbers; else PROTO_ECORRUPT and st_last_error() names the file,
 * the tensor and its first NaN or infinity. The model loaders call it on
 * every weight: a diverged training run or damaged bytes would otherwise
 * load and answer NaN. */
proto_status st_check_finite(const st_file *f, const char *name, const float *v);

#endif
