/* test_tok.c - TAP tests of the tokenizers (model/tok.c): known ids of the
 * real GPT-2 and BERT vocabularies (from ../shared/data, given as argv[1];
 * those checks are skipped with a note when the data is absent), BPE round
 * trips of random bytes, thread safety, and clear errors on bad files.
 * Id-for-id parity with the Python reference is tests/tok/parity.py.
 */
#include "tok.h"
#include "tap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char data_dir[2048];
static char tmp_dir[256];
static int have_data;

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

static int ids_eq(tok *t, const char *text, const int32_t *want, size_t nwant) {
  int32_t *ids = NULL;
  size_t n = 0;
  proto_status st = tok_encode(t, text, strlen(text), &ids, &n);
  int ok = st == PROTO_OK && n == nwant && (n == 0 || memcmp(ids, want, n * sizeof(int32_t)) == 0);
  if (!ok) {
    printf("#   \"%s\" ->", text);
    for (size_t i = 0; i < n; i++) printf(" %d", (int)ids[i]);
    printf(" (status %s)\n", proto_status_name(st));
  }
  free(ids);
  return ok;
}

static void path(char *out, size_t cap, const char *dir, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

static void write_file(const char *name, const char *content, size_t len) {
  char p[512];
  path(p, sizeof p, tmp_dir, name);
  FILE *f = fopen(p, "wb");
  if (f) {
    fwrite(content, 1, len, f);
    fclose(f);
  }
}

/* Writes text as tmp_dir/name; returns its path, put in out (512 bytes). */
static const char *tmp_file(char *out, const char *name, const char *text) {
  write_file(name, text, strlen(text));
  path(out, 512, tmp_dir, name);
  return out;
}

/* Whether the BPE files are refused as corrupt, leaving no tokenizer. */
static int bpe_corrupt(const char *vocab, const char *merges) {
  tok *t = (tok *)1;
  return tok_open_bpe(vocab, merges, &t) == PROTO_ECORRUPT && t == NULL;
}

/* Whether the WordPiece vocabulary is refused as corrupt, leaving none. */
static int wordpiece_corrupt(const char *vocab) {
  tok *t = (tok *)1;
  return tok_open_wordpiece(vocab, 1, -1, &t) == PROTO_ECORRUPT && t == NULL;
}

/* Writes a byte-level BPE vocab.json: the 256 byte tokens with id = byte
 * value, then extra[0..n) (JSON-safe UTF-8) with ids 256.. */
static void write_byte_vocab(const char *name, const char *const *extra, size_t nextra) {
  char *vj = malloc(8192);
  size_t n = 0;
  n += (size_t)sprintf(vj + n, "{");
  int id = 0, unprintable = 0;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = printable ? (unsigned)b : 256u + (unsigned)unprintable++;
    char u[8];
    if (cp < 0x80) {
      if (cp == '"' || cp == '\\') sprintf(u, "\\%c", cp);
      else sprintf(u, "%c", cp);
    } else {
      u[0] = (char)(0xC0 | (cp >> 6));
      u[1] = (char)(0x80 | (cp & 0x3F));
      u[2] = 0;
    }
    n += (size_t)sprintf(vj + n, "%s\"%s\": %d", b ? ", " : "", u, id++);
  }
  for (size_t i = 0; i < nextra; i++) n += (size_t)sprintf(vj + n, ", \"%s\": %d", extra[i], id++);
  n += (size_t)sprintf(vj + n, "}");
  write_file(name, vj, n);
  free(vj);
}

static tok *gpt2(void) {
  char v[2100], m[2100];
  tok *t = NULL;
  path(v, sizeof v, data_dir, "gpt2/vocab.json");
  path(m, sizeof m, data_dir, "gpt2/merges.txt");
  proto_status st = tok_open_bpe(v, m, &t);
  if (st) printf("# open gpt2: %s\n", tok_last_error());
  return t;
}

static tok *bert(int lower) {
  char v[2100];
  tok *t = NULL;
  path(v, sizeof v, data_dir, "bert-base-uncased/vocab.txt");
  proto_status st = tok_open_wordpiece(v, lower, -1, &t);
  if (st) printf("# open bert: %s\n", tok_last_error());
  return t;
}

TEST(gpt2_known_ids) {
  tok *t = gpt2();
  CHECK(t != NULL);
  if (!t) return;
  CHECK(tok_get_kind(t) == TOK_BPE);
  CHECK(tok_vocab_size(t) == 50257);
  CHECK(tok_token_id(t, "<|endoftext|>") == 50256);
  CHECK(tok_token_id(t, "hello") == 31373);
  CHECK(tok_token_id(t, "\xc4\xa0the") == 262); /* "Ġthe" */
  CHECK(tok_token_id(t, "no such token here") == -1);
  CHECK(ids_eq(t, "hello", (int32_t[]){31373}, 1));
  CHECK(ids_eq(t, " the", (int32_t[]){262}, 1));
  CHECK(ids_eq(t, "Hello world!", (int32_t[]){15496, 995, 0}, 3));
  CHECK(ids_eq(t, "", NULL, 0));
  /* special tokens in text are plain text */
  int32_t *ids = NULL;
  size_t n = 0;
  CHECK(tok_encode(t, "<|endoftext|>", 13, &ids, &n) == PROTO_OK && n > 1);
  free(ids);
  char *s = NULL;
  size_t len = 0;
  int32_t eot = 50256;
  CHECK(tok_decode(t, &eot, 1, &s, &len) == PROTO_OK && len == 13 &&
        strcmp(s, "<|endoftext|>") == 0);
  free(s);
  const char *fp = tok_fingerprint(t);
  CHECK(strlen(fp) == 64 && strspn(fp, "0123456789abcdef") == 64);
  tok *t2 = gpt2();
  CHECK(t2 && strcmp(tok_fingerprint(t2), fp) == 0);
  tok_close(t2);
  tok_close(t);
}

TEST(gpt2_roundtrip_random_bytes) {
  tok *t = gpt2();
  CHECK(t != NULL);
  if (!t) return;
  int bad = 0;
  char buf[600];
  for (int it = 0; it < 2000 && !bad; it++) {
    size_t len = rnd() % sizeof buf;
    int mode = it % 3;
    for (size_t i = 0; i < len; i++) {
      if (mode == 0) buf[i] = (char)rnd(); /* any bytes */
      else if (mode == 1)
        buf[i] = rnd() % 8 ? (char)('a' + rnd() % 26) : " \n\t'\xc3\xa9\xff"[rnd() % 8];
      else buf[i] = " \xe4\xb8\xad\xf0\x9f\x98\x80'sxy1 \n\r\x80"[rnd() % 16];
    }
    int32_t *ids = NULL;
    size_t n = 0;
    char *out = NULL;
    size_t olen = 0;
    if (tok_encode(t, buf, len, &ids, &n) || tok_decode(t, ids, n, &out, &olen) || olen != len ||
        memcmp(out, buf, len) != 0)
      bad = 1;
    free(ids);
    free(out);
  }
  CHECKF(!bad, "decode(encode(x)) != x for random bytes");
  tok_close(t);
}

typedef struct job {
  tok *t;
  const char *text;
  size_t len;
  int32_t *want;
  size_t nwant;
  int ok;
} job;

static void *worker(void *arg) {
  job *j = arg;
  j->ok = 1;
  for (int it = 0; it < 20; it++) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(j->t, j->text, j->len, &ids, &n) || n != j->nwant ||
        memcmp(ids, j->want, n * sizeof(int32_t)) != 0)
      j->ok = 0;
    free(ids);
  }
  return NULL;
}

static void run_threads(tok *t) {
  size_t len = 60000;
  char *text = malloc(len);
  for (size_t i = 0; i < len; i++) {
    uint32_t r = rnd() % 100;
    text[i] = r < 15   ? ' '
              : r < 17 ? '\n'
              : r < 19 ? ','
              : r < 20 ? '\''
                       : (char)('a' + rnd() % 26);
  }
  job jobs[4];
  pthread_t th[4];
  int32_t *want = NULL;
  size_t nwant = 0;
  CHECK(tok_encode(t, text, len, &want, &nwant) == PROTO_OK);
  for (int i = 0; i < 4; i++) {
    jobs[i] = (job){t, text, len, want, nwant, 0};
    pthread_create(&th[i], NULL, worker, &jobs[i]);
  }
  int ok = 1;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    ok &= jobs[i].ok;
  }
  CHECKF(ok, "concurrent encodes differ from a single-threaded one");
  free(want);
  free(text);
}

TEST(threads) {
  tok *t = gpt2();
  CHECK(t != NULL);
  if (t) run_threads(t);
  tok_close(t);
  t = bert(1);
  CHECK(t != NULL);
  if (t) run_threads(t);
  tok_close(t);
}

TEST(bert_known_ids) {
  tok *t = bert(1);
  CHECK(t != NULL);
  if (!t) return;
  CHECK(tok_get_kind(t) == TOK_WORDPIECE);
  CHECK(tok_vocab_size(t) == 30522);
  CHECK(tok_token_id(t, "[CLS]") == 101);
  CHECK(tok_token_id(t, "[PAD]") == 0);
  CHECK(ids_eq(t, "Hello, World!", (int32_t[]){7592, 1010, 2088, 999}, 4));
  CHECK(ids_eq(t, "[CLS] hello [SEP]", (int32_t[]){101, 7592, 102}, 3));
  CHECK(ids_eq(t, "x[MASK]y", (int32_t[]){1060, 103, 1061}, 3));
  CHECK(ids_eq(t, "H\xc3\xa9llo", (int32_t[]){7592}, 1));                   /* accent stripped */
  CHECK(ids_eq(t, "He\xcc\x81llo", (int32_t[]){7592}, 1));                  /* decomposed */
  CHECK(ids_eq(t, "\xe4\xb8\xad\xe6\x96\x87", (int32_t[]){1746, 1861}, 2)); /* CJK split */
  CHECK(ids_eq(t,
               "a\x01"
               "b",
               (int32_t[]){11113}, 1)); /* control dropped: "ab" */
  char longw[150];
  memset(longw, 'a', sizeof longw - 1);
  longw[sizeof longw - 1] = 0;
  CHECK(ids_eq(t, longw, (int32_t[]){100}, 1));
  longw[100] = 0; /* exactly 100 characters: not [UNK] */
  int32_t *ids = NULL;
  size_t n = 0;
  CHECK(tok_encode(t, longw, 100, &ids, &n) == PROTO_OK && n > 1 && ids[0] != 100);
  free(ids);
  CHECK(tok_encode(t, "bad \xff", 5, &ids, &n) == PROTO_EUTF8);
  int32_t dec_ids[] = {101, 7592, 1010, 14477, 20961, 3468, 102};
  char *s = NULL;
  size_t len = 0;
  CHECK(tok_decode(t, dec_ids, 7, &s, &len) == PROTO_OK && s &&
        strcmp(s, "[CLS] hello , unaffable [SEP]") == 0);
  if (s) printf("# decoded: %s\n", s);
  free(s);
  int32_t bad_id = 30522;
  CHECK(tok_decode(t, &bad_id, 1, &s, &len) == PROTO_EINVAL);
  bad_id = -1;
  CHECK(tok_decode(t, &bad_id, 1, &s, &len) == PROTO_EINVAL);
  tok *c = bert(0);
  CHECK(c && strcmp(tok_fingerprint(c), tok_fingerprint(t)) != 0);
  CHECK(c && ids_eq(c, "hello", (int32_t[]){7592}, 1));
  CHECK(c && !ids_eq(c, "Hello", (int32_t[]){7592}, 1));
  tok_close(c);
  tok_close(t);
}

TEST(open_dir) {
  char d[512], p[600], src[2100];
  tok *t = NULL;
  snprintf(d, sizeof d, "%s/wpdir", tmp_dir);
  mkdir(d, 0700);
  CHECK(tok_open_dir(d, &t) == PROTO_ENOTFOUND && t == NULL);
  CHECK(strstr(tok_last_error(), "wpdir") != NULL);
  /* a small WordPiece vocabulary, cased by its config */
  static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nHello\nhello\n##s\n,\n";
  write_file("wpdir/vocab.txt", vocab, sizeof vocab - 1);
  CHECK(tok_open_dir(d, &t) == PROTO_OK && t && tok_get_kind(t) == TOK_WORDPIECE);
  CHECK(t && ids_eq(t, "Hellos, HELLO", (int32_t[]){6, 7, 8, 6}, 4));
  tok_close(t);
  t = NULL;
  write_file("wpdir/tokenizer_config.json", "{\"do_lower_case\": false}", 24);
  CHECK(tok_open_dir(d, &t) == PROTO_OK && t);
  CHECK(t && ids_eq(t, "Hellos, HELLO", (int32_t[]){5, 7, 8, 1}, 4));
  tok_close(t);
  t = NULL;
  write_file("wpdir/tokenizer_config.json", "{\"do_lower_case\": fal", 21);
  CHECK(tok_open_dir(d, &t) == PROTO_ECORRUPT && t == NULL);
  CHECK(strstr(tok_last_error(), "tokenizer_config.json") != NULL);
  if (have_data) {
    /* a BPE directory wins over vocab.txt */
    snprintf(p, sizeof p, "%s/bpedir", tmp_dir);
    mkdir(p, 0700);
    path(src, sizeof src, data_dir, "gpt2/vocab.json");
    char l1[700], l2[700];
    snprintf(l1, sizeof l1, "%s/vocab.json", p);
    CHECK(symlink(src, l1) == 0);
    path(src, sizeof src, data_dir, "gpt2/merges.txt");
    snprintf(l2, sizeof l2, "%s/merges.txt", p);
    CHECK(symlink(src, l2) == 0);
    CHECK(tok_open_dir(p, &t) == PROTO_OK && t && tok_get_kind(t) == TOK_BPE);
    CHECK(t && tok_token_id(t, "<|endoftext|>") == 50256);
    tok_close(t);
    t = NULL;
  }
}

/* GPT-2's pattern runs in the `regex` module, whose Unicode is 15.0, so
 * characters new in 15.0 are letters and digits here although Python 3.11's
 * unicodedata (14.0) has them unassigned. The merges "X ð" and "7 ð" (ð is
 * the byte 0xF0 that starts these 4-byte characters) and "' s" only apply
 * inside one pre-token, so the ids show the split. The expected splits are
 * regex.findall's (python3-regex 2022.10.31): "X𑼄" "'s", whereas Unicode
 * 14.0 would give "X" "𑼄'" "s". */
TEST(bpe_unicode15_classes) {
  char v[512], m[512];
  tok *t = NULL;
  write_byte_vocab("u15.json", (const char *const[]){"X\xc3\xb0", "'s", "7\xc3\xb0"}, 3);
  static const char merges[] = "#version: 0.2\nX \xc3\xb0\n' s\n7 \xc3\xb0\n";
  write_file("u15.txt", merges, sizeof merges - 1);
  snprintf(v, sizeof v, "%s/u15.json", tmp_dir);
  snprintf(m, sizeof m, "%s/u15.txt", tmp_dir);
  CHECK(tok_open_bpe(v, m, &t) == PROTO_OK && t);
  if (!t) return;
  /* U+11F04 KAWI LETTER A (Lo, new in 15.0) */
  CHECK(ids_eq(t, "X\xf0\x91\xbc\x84's", (int32_t[]){256, 0x91, 0xBC, 0x84, 257}, 5));
  /* U+1E4D0 NAG MUNDARI LETTER O (Lo) */
  CHECK(ids_eq(t, "X\xf0\x9e\x93\x90's", (int32_t[]){256, 0x9E, 0x93, 0x90, 257}, 5));
  /* U+1E4F1 NAG MUNDARI DIGIT ONE (Nd) */
  CHECK(ids_eq(t, "7\xf0\x9e\x93\xb1's", (int32_t[]){258, 0x9E, 0x93, 0xB1, 257}, 5));
  /* U+11F43 KAWI DANDA (Po, new in 15.0): punctuation, as before */
  CHECK(ids_eq(t, "X\xf0\x91\xbd\x83's", (int32_t[]){'X', 0xF0, 0x91, 0xBD, 0x83, '\'', 's'}, 7));
  tok_close(t);
}

/* Lower-casing is per character, as in Hugging Face's BertTokenizer (its
 * tokenize() lower-cases the text one character at a time before the basic
 * tokenizer; the fast tokenizer's BertNormalizer does too), so capital sigma
 * is always σ: "ΟΔΟΣ" -> "οδοσ", where Python's "ΟΔΟΣ".lower() applies
 * Final_Sigma and gives "οδος". An ς already in the text stays. */
TEST(wordpiece_sigma_per_character) {
  char v[512];
  tok *t = NULL;
  static const char vocab[] =
      "[UNK]\n\xce\xbf\xce\xb4\xce\xbf\xcf\x83\n" /* 1 οδοσ */
      "\xce\xbf\xce\xb4\xce\xbf\xcf\x82\n"        /* 2 οδος */
      "\xcf\x83\xce\xb1\n\xcf\x83\n\xcf\x82\n"    /* 3 σα, 4 σ, 5 ς */
      "\xce\xb1\xcf\x83\n\xce\xb1\xcf\x82\n.\n";  /* 6 ασ, 7 ας, 8 . */
  write_file("sigma.txt", vocab, sizeof vocab - 1);
  snprintf(v, sizeof v, "%s/sigma.txt", tmp_dir);
  CHECK(tok_open_wordpiece(v, 1, -1, &t) == PROTO_OK && t);
  if (!t) return;
  CHECK(ids_eq(t, "\xce\x9f\xce\x94\xce\x9f\xce\xa3", (int32_t[]){1}, 1)); /* ΟΔΟΣ */
  CHECK(ids_eq(t, "\xce\xa3\xce\x91", (int32_t[]){3}, 1));                 /* ΣΑ */
  CHECK(ids_eq(t, "\xce\xa3", (int32_t[]){4}, 1));                         /* Σ */
  CHECK(ids_eq(t, "\xce\x91\xce\xa3.", (int32_t[]){6, 8}, 2));             /* ΑΣ. */
  CHECK(ids_eq(t, "\xce\xbf\xce\xb4\xce\xbf\xcf\x82", (int32_t[]){2}, 1)); /* οδος */
  tok_close(t);
}

TEST(bad_files) {
  char v[512], m[512];
  tok *t = (tok *)1;
  snprintf(v, sizeof v, "%s/nonexistent.json", tmp_dir);
  snprintf(m, sizeof m, "%s/m.txt", tmp_dir);
  write_file("m.txt", "#version: 0.2\na b\n", 18);
  CHECK(tok_open_bpe(v, m, &t) == PROTO_EIO && t == NULL);
  CHECK(strstr(tok_last_error(), "nonexistent.json") != NULL);
  printf("# %s\n", tok_last_error());

  /* a tiny valid BPE: all 256 byte tokens + "ab" */
  write_byte_vocab("v.json", (const char *const[]){"ab"}, 1);
  snprintf(v, sizeof v, "%s/v.json", tmp_dir);
  t = NULL;
  CHECK(tok_open_bpe(v, m, &t) == PROTO_OK && t && tok_vocab_size(t) == 257);
  CHECK(t && ids_eq(t, "abab ab", (int32_t[]){256, 256, 32, 256}, 4)); /* ' ' is byte 32 */
  if (t) {
    int32_t *ids = NULL;
    size_t k = 0;
    CHECK(tok_encode(t, "abab", 4, &ids, &k) == PROTO_OK && k == 2 && ids[0] == 256 &&
          ids[1] == 256);
    free(ids);
  }
  tok_close(t);
  t = NULL;

  CHECK(bpe_corrupt(tmp_file(v, "bad1.json", "{\"a\": 1,"), m));
  CHECK(strstr(tok_last_error(), "bad1.json") != NULL);
  printf("# %s\n", tok_last_error());
  CHECK(bpe_corrupt(tmp_file(v, "bad2.json", "[1, 2]"), m));
  CHECK(bpe_corrupt(tmp_file(v, "bad3.json", "{\"a\": -4}"), m));
  CHECK(bpe_corrupt(tmp_file(v, "bad4.json", "{\"a\": 0, \"b\": \"x\"}"), m));
  CHECK(bpe_corrupt(tmp_file(v, "bad5.json", "{\"a\": 0}"), m)); /* no byte tokens */
  printf("# %s\n", tok_last_error());
  /* bad merges with the good vocab */
  snprintf(v, sizeof v, "%s/v.json", tmp_dir);
  CHECK(bpe_corrupt(v, tmp_file(m, "m2.txt", "#version: 0.2\na b\nabc\n")));
  CHECK(strstr(tok_last_error(), "m2.txt:3") != NULL);
  printf("# %s\n", tok_last_error());
  CHECK(bpe_corrupt(v, tmp_file(m, "m3.txt", "a  b\n")));
  CHECK(bpe_corrupt(v, tmp_file(m, "m4.txt", "a \xff\n")));

  /* WordPiece */
  CHECK(wordpiece_corrupt(tmp_file(v, "w1.txt", "a\nb\n")));
  CHECK(strstr(tok_last_error(), "[UNK]") != NULL);
  CHECK(wordpiece_corrupt(tmp_file(v, "w2.txt", "")));
  CHECK(wordpiece_corrupt(tmp_file(v, "w3.txt", "[UNK]\n\xc3\n")));
  snprintf(v, sizeof v, "%s/missing.txt", tmp_dir);
  CHECK(tok_open_wordpiece(v, 1, -1, &t) == PROTO_EIO && t == NULL);
  /* CRLF vocabulary and an empty line */
  write_file("w4.txt", "[UNK]\r\nab\r\n\r\n##c\r\n", 18);
  snprintf(v, sizeof v, "%s/w4.txt", tmp_dir);
  CHECK(tok_open_wordpiece(v, 1, -1, &t) == PROTO_OK && t && tok_vocab_size(t) == 4);
  CHECK(t && ids_eq(t, "abc ab x", (int32_t[]){1, 3, 1, 0}, 4));
  tok_close(t);
  tok_close(NULL);
  CHECK(tok_open_bpe(NULL, NULL, &t) == PROTO_EINVAL);
}

int main(int argc, char **argv) {
  snprintf(data_dir, sizeof data_dir, "%s", argc > 1 ? argv[1] : "../shared/data");
  char probe[2100];
  path(probe, sizeof probe, data_dir, "gpt2/vocab.json");
  have_data = access(probe, R_OK) == 0;
  snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_tok_XXXXXX");
  if (!mkdtemp(tmp_dir)) {
    printf("Bail out! mkdtemp failed\n");
    return 1;
  }
  if (have_data) {
    RUN(gpt2_known_ids);
    RUN(gpt2_roundtrip_random_bytes);
    RUN(bert_known_ids);
    RUN(threads);
  } else {
    SKIP(
        "gpt2_known_ids, gpt2_roundtrip_random_bytes, bert_known_ids, threads: "
        "the real vocabularies are not at %s",
        data_dir);
  }
  RUN(open_dir);
  RUN(bpe_unicode15_classes);
  RUN(wordpiece_sigma_per_character);
  RUN(bad_files);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) printf("# could not remove %s\n", tmp_dir);
  return tap_done();
}
