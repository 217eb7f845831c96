/* safetensors.c - mmap and validate a safetensors file; float32 views of its
 * tensors. Validation happens once in st_open (header JSON, dtypes, shapes,
 * byte counts, offsets inside the file, no overlaps), so later lookups cannot
 * read outside the mapping. It does not write files (model/train/st.py does)
 * and assumes a little-endian host (x86-64, aarch64).
 */
#include "st.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers larger than this are refused (HF's own limit is 100 MB). */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

typedef struct st_entry {
  st_tensor_info info;
  uint64_t begin, end; /* data_offsets, relative to the data start */
  float *converted;    /* owned float32 copy (F16/BF16/unaligned F32) */
} st_entry;

struct st_file {
  char *path;
  const unsigned char *map; /* whole file */
  size_t size;
  json_t *header;     /* keeps the name strings alive */
  json_t *meta;       /* borrowed from header, may be NULL */
  st_entry *entries;  /* (count), sorted by data offset */
  st_entry **by_name; /* (count), sorted by name */
  size_t count;
  pthread_mutex_t lock; /* guards converted */
};

const char *st_last_error(void) { return proto_err_get(); }

static const struct {
  const char *name;
  size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2},   [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},   [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};

const char *st_dtype_name(st_dtype d) {
  return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].name : "?";
}

static int st_dtype_parse(const char *s, st_dtype *d) {
  for (int i = 0; i < ST_DTYPE_COUNT; i++)
    if (strcmp(s, st_dtypes[i].name) == 0) {
      *d = (st_dtype)i;
      return 1;
    }
  return 0;
}

static int st_cmp_offset(const void *a, const void *b) {
  const st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static int st_cmp_name(const void *a, const void *b) {
  const st_entry *const *x = a, *const *y = b;
  return strcmp((*x)->info.name, (*y)->info.name);
}

/* Parses one header entry into e; returns 0 and sets the error detail on failure. */
static int st_parse_entry(const st_file *f, const char *name, json_t *v, st_entry *e,
                          uint64_t data_size) {
  const char *path = f->path;
  if (!json_is_object(v)) {
    proto_err_set("%s: tensor '%s': header entry is not an object", path, name);
    return 0;
  }
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo)) {
    proto_err_set("%s: tensor '%s': needs string \"dtype\", arrays \"shape\" and \"data_offsets\"",
                  path, name);
    return 0;
  }
  if (!st_dtype_parse(json_string_value(jd), &e->info.dtype)) {
    proto_err_set("%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(jd));
    return 0;
  }
  size_t nd = json_array_size(js);
  if (nd > ST_MAX_DIMS) {
    proto_err_set("%s: tensor '%s': %zu dimensions (at most %d)", path, name, nd, ST_MAX_DIMS);
    return 0;
  }
  uint64_t count = 1;
  int overflow = 0;
  for (size_t i = 0; i < nd; i++) {
    json_t *d = json_array_get(js, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0) {
      proto_err_set("%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name, i);
      return 0;
    }
    uint64_t dim = (uint64_t)json_integer_value(d);
    e->info.shape[i] = (int64_t)dim;
    if (dim && count > UINT64_MAX / dim) overflow = 1;
    count *= dim;
  }
  e->info.ndim = (int)nd;
  size_t es = st_dtypes[e->info.dtype].size;
  if (overflow || count > UINT64_MAX / es) {
    proto_err_set("%s: tensor '%s': shape too large", path, name);
    return 0;
  }
  if (json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
      !json_is_integer(json_array_get(jo, 1)) || json_integer_value(json_array_get(jo, 0)) < 0 ||
      json_integer_value(json_array_get(jo, 1)) < 0) {
    proto_err_set("%s: tensor '%s': data_offsets must be two non-negative integers", path, name);
    return 0;
  }
  e->begin = (uint64_t)json_integer_value(json_array_get(jo, 0));
  e->end = (uint64_t)json_integer_value(json_array_get(jo, 1));
  if (e->begin > e->end) {
    proto_err_set("%s: tensor '%s': data_offsets [%llu, %llu] are reversed", path, name,
                  (unsigned long long)e->begin, (unsigned long long)e->end);
    return 0;
  }
  if (e->end > data_size) {
    proto_err_set(
        "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data "
        "(%llu bytes; file truncated?)",
        path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
        (unsigned long long)data_size);
    return 0;
  }
  if (e->end - e->begin != count * es) {
    proto_err_set("%s: tensor '%s': %llu bytes for %s shape of %llu elements (expected %llu)", path,
                  name, (unsigned long long)(e->end - e->begin), st_dtypes[e->info.dtype].name,
                  (unsigned long long)count, (unsigned long long)(count * es));
    return 0;
  }
  e->info.name = name;
  e->info.nbytes = (size_t)(e->end - e->begin);
  return 1;
}

proto_status st_open(const char *path, st_file **out) {
  proto_status st = PROTO_ECORRUPT;
  st_file *f = NULL;
  int fd = -1;
  *out = NULL;
  proto_err_clear();
  f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    proto_err_set("%s: out of memory", path);
    st = PROTO_ENOMEM;
    goto fail;
  }
  pthread_mutex_init(&f->lock, NULL);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    proto_err_set("%s: %s", path, strerror(errno));
    st = errno == ENOENT ? PROTO_ENOTFOUND : PROTO_EIO;
    goto fail;
  }
  if (!S_ISREG(sb.st_mode)) {
    proto_err_set("%s: not a regular file", path);
    st = PROTO_EIO;
    goto fail;
  }
  f->size = (size_t)sb.st_size;
  if (f->size < 8) {
    proto_err_set("%s: truncated: %zu bytes, too short for a safetensors header", path, f->size);
    goto fail;
  }
  void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) {
    proto_err_set("%s: mmap: %s", path, strerror(errno));
    st = PROTO_EIO;
    goto fail;
  }
  f->map = m;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map[i];
  if (hlen > ST_MAX_HEADER || hlen > f->size - 8) {
    proto_err_set(
        "%s: header length %llu exceeds the file (%zu bytes; truncated or not safetensors)", path,
        (unsigned long long)hlen, f->size);
    goto fail;
  }
  json_error_t jerr;
  f->header = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!f->header || !json_is_object(f->header)) {
    proto_err_set("%s: header is not a JSON object: %s (byte %d)", path,
                  f->header ? "wrong type" : jerr.text, f->header ? 0 : jerr.position);
    goto fail;
  }
  uint64_t data_size = f->size - 8 - hlen;
  const unsigned char *data = f->map + 8 + hlen;
  size_t n = json_object_size(f->header);
  f->entries = calloc(n ? n : 1, sizeof *f->entries);
  f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
  if (!f->entries || !f->by_name) {
    proto_err_set("%s: out of memory", path);
    st = PROTO_ENOMEM;
    goto fail;
  }
  const char *key;
  json_t *val;
  json_object_foreach(f->header, key, val) {
    if (strcmp(key, "__metadata__") == 0) {
      const char *mk;
      json_t *mv;
      if (!json_is_object(val)) {
        proto_err_set("%s: __metadata__ is not an object", path);
        goto fail;
      }
      json_object_foreach(val, mk, mv) {
        if (!json_is_string(mv)) {
          proto_err_set("%s: __metadata__ '%s' is not a string", path, mk);
          goto fail;
        }
      }
      f->meta = val;
      continue;
    }
    st_entry *e = &f->entries[f->count];
    if (!st_parse_entry(f, key, val, e, data_size)) goto fail;
    e->info.data = data + e->begin;
    f->count++;
  }
  qsort(f->entries, f->count, sizeof *f->entries, st_cmp_offset);
  for (size_t i = 1; i < f->count; i++) {
    const st_entry *a = &f->entries[i - 1], *b = &f->entries[i];
    if (b->begin < a->end && b->begin != b->end) {
      proto_err_set("%s: tensor '%s' [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", path,
                    b->info.name, (unsigned long long)b->begin, (unsigned long long)b->end,
                    a->info.name, (unsigned long long)a->begin, (unsigned long long)a->end);
      goto fail;
    }
  }
  for (size_t i = 0; i < f->count; i++) f->by_name[i] = &f->entries[i];
  qsort(f->by_name, f->count, sizeof *f->by_name, st_cmp_name);
  close(fd);
  *out = f;
  return PROTO_OK;
fail:
  if (fd >= 0) close(fd);
  st_close(f);
  return st;
}

void st_close(st_file *f) {
  if (!f) return;
  if (f->entries)
    for (size_t i = 0; i < f->count; i++) free(f->entries[i].converted);
  free(f->entries);
  free(f->by_name);
  if (f->header) json_decref(f->header);
  if (f->map) munmap((void *)f->map, f->size);
  if (f->path) pthread_mutex_destroy(&f->lock);
  free(f->path);
  free(f);
}

const char *st_path(const st_file *f) { return f->path; }
size_t st_count(const st_file *f) { return f->count; }
const st_tensor_info *st_at(const st_file *f, size_t i) {
  return i < f->count ? &f->entries[i].info : NULL;
}

static st_entry *st_lookup(const st_file *f, const char *name) {
  size_t lo = 0, hi = f->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, f->by_name[mid]->info.name);
    if (c == 0) return f->by_name[mid];
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

const st_tensor_info *st_find(const st_file *f, const char *name) {
  st_entry *e = st_lookup(f, name);
  return e ? &e->info : NULL;
}

const char *st_metadata(const st_file *f, const char *key) {
  return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

static float st_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
  } else if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      int e = -1;
      do {
        e++;
        man <<= 1;
      } while (!(man & 0x400));
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float out;
  memcpy(&out, &bits, 4);
  return out;
}

static void st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, cap - o, "[");
  for (int i = 0; i < ndim && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
}

proto_status st_get_f32(st_file *f, const char *name, int ndim, const int64_t *shape,
                        const float **out) {
  *out = NULL;
  st_entry *e = st_lookup(f, name);
  if (!e) {
    proto_err_set("%s: tensor '%s' is missing", f->path, name);
    return PROTO_ENOTFOUND;
  }
  const st_tensor_info *t = &e->info;
  int ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = shape[i] < 0 || shape[i] == t->shape[i];
  if (!ok) {
    char want[160], got[160];
    st_shape_str(want, sizeof want, ndim, shape);
    st_shape_str(got, sizeof got, t->ndim, t->shape);
    proto_err_set("%s: tensor '%s' has shape %s, expected %s (-1 = any)", f->path, name, got, want);
    return PROTO_EDIM;
  }
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
    proto_err_set("%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", f->path, name,
                  st_dtypes[t->dtype].name);
    return PROTO_ETYPE;
  }
  if (t->dtype == ST_F32 && ((uintptr_t)t->data & 3) == 0) {
    *out = t->data;
    return PROTO_OK;
  }
  proto_status st = PROTO_OK;
  pthread_mutex_lock(&f->lock);
  if (!e->converted) {
    size_t count = t->nbytes / st_dtypes[t->dtype].size;
    float *buf = malloc(count ? count * sizeof(float) : 1);
    if (!buf) {
      proto_err_set("%s: tensor '%s': out of memory converting to F32", f->path, name);
      st = PROTO_ENOMEM;
    } else {
      const unsigned char *src = t->data;
      for (size_t i = 0; i < count; i++) {
        if (t->dtype == ST_F32) {
          memcpy(&buf[i], src + 4 * i, 4);
        } else {
          uint16_t h = (uint16_t)(src[2 * i] | (src[2 * i + 1] << 8));
          if (t->dtype == ST_F16) {
            buf[i] = st_half_to_float(h);
          } else {
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&buf[i], &bits, 4);
          }
        }
      }
      e->converted = buf;
    }
  }
  *out = e->converted;
  pthread_mutex_unlock(&f->lock);
  return st;
}

proto_status st_check_finite(const st_file *f, const char *name, const float *v) {
  const st_tensor_info *t = st_find(f, name);
  if (!t || !v) return PROTO_OK;
  size_t count = 1;
  for (int i = 0; i < t->ndim; i++) count *= (size_t)t->shape[i];
  for (size_t i = 0; i < count; i++) {
    if (!isfinite(v[i])) {
      proto_err_set(
          "%s: tensor '%s': element %zu is %s: the weights are damaged (or the training "
          "that wrote them diverged)",
          f->path, name, i, isnan(v[i]) ? "NaN" : "infinite");
      return PROTO_ECORRUPT;
    }
  }
  return PROTO_OK;
}
