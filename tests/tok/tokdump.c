/* tokdump.c - prints what the C tokenizers make of a file, in the format of
 * `model/train/tokref.py dump`, so tests/tok/parity.py can compare them line
 * for line; also prints Unicode normalisation results and measures BPE
 * throughput. A test helper, not a user tool.
 *
 *   tokdump --bpe VOCAB_JSON MERGES_TXT FILE
 *   tokdump --wordpiece VOCAB_TXT [--cased] FILE
 *   tokdump --dir DIR FILE
 *   tokdump --unicode FILE        per line: NFC, NFD and per-character lower
 *                                 case as hex code points, then the GPT-2
 *                                 class digit (0-3) of each code point
 *                                 ("ERR" if invalid)
 *   tokdump --bench --bpe VOCAB_JSON MERGES_TXT FILE...   MB/s of tok_encode
 *   tokdump --whole --bpe VOCAB_JSON MERGES_TXT FILE...   each file whole,
 *                                 tagged F0, F1, ... (one process for many
 *                                 files: under the sanitizers, loading the
 *                                 vocabulary costs more than a file)
 */
#include "tok.h"
#include "tok_unicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap);
  size_t r;
  while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = realloc(b, cap *= 2);
      if (!nb) {
        free(b);
        b = NULL;
      } else b = nb;
    }
  }
  fclose(f);
  *len = n;
  return b;
}

static int print_ids(const char *tag, tok *t, const char *s, size_t len) {
  int32_t *ids = NULL;
  size_t n = 0;
  proto_status st = tok_encode(t, s, len, &ids, &n);
  if (st == PROTO_EUTF8) {
    printf("%s ERR\n", tag);
    return 0;
  }
  if (st) {
    fprintf(stderr, "tokdump: %s: %s\n", proto_strerror(st), tok_last_error());
    return 1;
  }
  printf("%s", tag);
  if (n == 0) printf(" ");
  for (size_t i = 0; i < n; i++) printf(" %d", (int)ids[i]);
  printf("\n");
  free(ids);
  return 0;
}

static void print_cps(const tu_buf *b) {
  for (size_t i = 0; i < b->n; i++) printf("%s%X", i ? "," : "", (unsigned)b->v[i]);
}

static int unicode_dump(const char *data, size_t len) {
  size_t pos = 0;
  tu_buf in = {0}, nfc = {0}, nfd = {0}, low = {0};
  for (;;) {
    const char *nl = memchr(data + pos, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - (data + pos)) : len - pos;
    const unsigned char *s = (const unsigned char *)data + pos;
    in.n = nfc.n = nfd.n = low.n = 0;
    if (!proto_utf8_valid((const char *)s, ll)) {
      printf("ERR\n");
    } else {
      for (size_t i = 0; i < ll;) {
        size_t adv;
        int32_t cp = tu_utf8_next(s + i, ll - i, &adv);
        if (tu_buf_push(&in, (uint32_t)cp)) return 1;
        uint32_t l[3];
        size_t k = tu_lower((uint32_t)cp, l);
        for (size_t j = 0; j < k; j++)
          if (tu_buf_push(&low, l[j])) return 1;
        i += adv;
      }
      if (tu_nfc(in.v, in.n, &nfc) || tu_nfd(in.v, in.n, &nfd)) return 1;
      print_cps(&nfc);
      printf(" ");
      print_cps(&nfd);
      printf(" ");
      print_cps(&low);
      printf(" ");
      for (size_t i = 0; i < in.n; i++) putchar('0' + (int)(tu_props(in.v[i]) & TU_BPE_MASK));
      printf("\n");
    }
    if (!nl) break;
    pos += ll + 1;
  }
  free(in.v);
  free(nfc.v);
  free(nfd.v);
  free(low.v);
  return 0;
}

/* Each of the n files whole, tagged F0, F1, ...; 0, or 1 on a failure. */
static int whole_files(tok *t, char **files, int n) {
  int rc = 0;
  for (int i = 0; i < n; i++) {
    size_t len;
    char *d = slurp(files[i], &len);
    if (!d) {
      perror(files[i]);
      return 1;
    }
    char tag[32];
    snprintf(tag, sizeof tag, "F%d", i);
    rc |= print_ids(tag, t, d, len);
    free(d);
  }
  return rc;
}

int main(int argc, char **argv) {
  tok *t = NULL;
  int bench = 0, whole = 0, cased = 0, a = 1, rc = 1;
  proto_status st = PROTO_OK;
  if (a < argc && strcmp(argv[a], "--bench") == 0) {
    bench = 1;
    a++;
  } else if (a < argc && strcmp(argv[a], "--whole") == 0) {
    whole = 1;
    a++;
  }
  if (a + 1 < argc && strcmp(argv[a], "--unicode") == 0) {
    size_t len;
    char *d = slurp(argv[a + 1], &len);
    if (!d) {
      perror(argv[a + 1]);
      return 1;
    }
    rc = unicode_dump(d, len);
    free(d);
    return rc;
  }
  if (a + 2 < argc && strcmp(argv[a], "--bpe") == 0) {
    st = tok_open_bpe(argv[a + 1], argv[a + 2], &t);
    a += 3;
  } else if (a + 1 < argc && strcmp(argv[a], "--wordpiece") == 0) {
    const char *v = argv[a + 1];
    a += 2;
    if (a < argc && strcmp(argv[a], "--cased") == 0) {
      cased = 1;
      a++;
    }
    st = tok_open_wordpiece(v, !cased, -1, &t);
  } else if (a + 1 < argc && strcmp(argv[a], "--dir") == 0) {
    st = tok_open_dir(argv[a + 1], &t);
    a += 2;
  } else {
    fprintf(stderr,
            "usage: tokdump [--bench | --whole] (--bpe V M | --wordpiece V [--cased] | --dir D) "
            "FILE...\n"
            "       tokdump --unicode FILE\n");
    return 2;
  }
  if (st) {
    fprintf(stderr, "tokdump: %s: %s\n", proto_strerror(st), tok_last_error());
    return 1;
  }
  if (a >= argc) {
    fprintf(stderr, "tokdump: no file\n");
    goto leave;
  }
  if (whole) {
    rc = whole_files(t, argv + a, argc - a);
    goto leave;
  }
  if (bench) {
    size_t total = 0, ntok = 0;
    double t0 = proto_now(), c0 = cpu_now();
    for (int i = a; i < argc; i++) {
      size_t len;
      char *d = slurp(argv[i], &len);
      if (!d) {
        perror(argv[i]);
        goto leave;
      }
      int32_t *ids = NULL;
      size_t n = 0;
      st = tok_encode(t, d, len, &ids, &n);
      free(d);
      if (st) {
        fprintf(stderr, "tokdump: %s\n", tok_last_error());
        goto leave;
      }
      free(ids);
      total += len;
      ntok += n;
    }
    double dt = proto_now() - t0, dc = cpu_now() - c0;
    printf("%zu bytes %zu tokens %.3f s %.3f MB/s; cpu %.3f s %.3f MB/s\n", total, ntok, dt,
           total / dt / 1e6, dc, total / dc / 1e6);
    rc = 0;
    goto leave;
  }
  size_t len;
  char *d = slurp(argv[a], &len);
  if (!d) {
    perror(argv[a]);
    goto leave;
  }
  size_t pos = 0, lineno = 0;
  char *valid = malloc(len + 1);
  size_t vn = 0;
  int first_valid = 1;
  rc = 0;
  for (;;) {
    const char *nl = memchr(d + pos, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - (d + pos)) : len - pos;
    char tag[32];
    snprintf(tag, sizeof tag, "L%zu", ++lineno);
    rc |= print_ids(tag, t, d + pos, ll);
    if (valid && proto_utf8_valid(d + pos, ll)) {
      if (!first_valid) valid[vn++] = '\n';
      memcpy(valid + vn, d + pos, ll);
      vn += ll;
      first_valid = 0;
    }
    if (!nl) break;
    pos += ll + 1;
  }
  rc |= print_ids("ALL", t, d, len);
  if (valid) rc |= print_ids("VALID", t, valid, vn);
  else rc = 1;
  printf("FP %s\n", tok_fingerprint(t));
  free(valid);
  free(d);
leave:
  tok_close(t);
  return rc;
}
