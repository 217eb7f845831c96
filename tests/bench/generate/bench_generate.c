/* bench_generate.c - greedy generation with the C RETRO decoder for the
 * generate bench (bench_generate.py drives it and runs PyTorch on the same
 * model and neighbours). Batch 1: the prompt in one pass, then one token at
 * a time; before the forward reaches the last token of chunk u, the chunk's
 * neighbours come from a fixed source (a file of neighbour tokens), timed as
 * "retrieval" (live retrieval is the server's bench).
 *
 * Usage: bench_generate MODEL_DIR PROMPT.i32 NEIGHBOURS.i32 K N_GEN THREADS
 *   NEIGHBOURS.i32: (chunks, K, r) int32, pad = config pad_id.
 * Prints one JSON object: timings and the generated token ids.
 */
#include "proto.h"
#include "retro.h"
#include "sample.h"
#include "slurp.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int32_t *slurp_i32(const char *path, size_t *n) {
  size_t len;
  int32_t *buf = slurp_file(path, &len);
  *n = len / 4;
  return buf;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: bench_generate MODEL_DIR PROMPT.i32 NEIGHBOURS.i32 K N_GEN THREADS\n");
    return 2;
  }
  int K = atoi(argv[4]), n_gen = atoi(argv[5]), threads = atoi(argv[6]);
  size_t n_prompt = 0, n_nb = 0;
  int32_t *prompt = slurp_i32(argv[2], &n_prompt);
  int32_t *nb = slurp_i32(argv[3], &n_nb);
  retro *r = NULL;
  retro_state *s = NULL;
  sampler *smp = NULL;
  float *logits = NULL;
  int32_t *out = NULL;
  int rc = 1;
  if (!prompt || !nb || n_prompt < 1 || n_gen < 1 || K < 0) {
    fprintf(stderr, "bench_generate: bad inputs\n");
    goto leave;
  }
  double t_load = proto_now();
  if (retro_open(argv[1], threads, &r) != PROTO_OK) {
    fprintf(stderr, "bench_generate: %s\n", retro_last_error());
    goto leave;
  }
  t_load = proto_now() - t_load;
  const retro_config *c = retro_get_config(r);
  const int m = c->chunk_len, rl = c->neighbour_len, total = (int)n_prompt + n_gen;
  const size_t per_chunk = (size_t)K * (size_t)rl, n_chunks_src = K > 0 ? n_nb / per_chunk : 0;
  sample_params sp = sample_params_default();
  sp.temperature = 0.0f;
  logits = malloc((size_t)c->vocab_size * sizeof(float));
  out = malloc((size_t)n_gen * sizeof(int32_t));
  if (!logits || !out || retro_state_new(r, total, &s) != PROTO_OK ||
      sample_new(c->vocab_size, &sp, &smp) != PROTO_OK) {
    fprintf(stderr, "bench_generate: setup: %s\n", retro_last_error());
    goto leave;
  }
  double t_retr = 0.0;
  int next_chunk = 0; /* first chunk whose neighbours are not set yet */
  double t0 = proto_now(), ttft = 0.0, ttft_cpu = 0.0, encode_at_ttft = 0.0;
  clock_t c0 = clock();
  int32_t cur = 0;
  for (int step = 0; step <= n_gen; step++) {
    const int32_t *feed = step == 0 ? prompt : &cur;
    int n = step == 0 ? (int)n_prompt : 1;
    int pos = retro_state_pos(s);
    if (step == n_gen) break; /* the last sampled token need not be fed */
    /* neighbours for every chunk whose last token this forward reaches */
    double tr = proto_now();
    while ((size_t)next_chunk < n_chunks_src && next_chunk * m + m - 1 < pos + n) {
      if (retro_set_neighbours(s, next_chunk, nb + (size_t)next_chunk * per_chunk, K, c->pad_id) !=
          PROTO_OK) {
        fprintf(stderr, "bench_generate: %s\n", retro_last_error());
        goto leave;
      }
      next_chunk++;
    }
    t_retr += proto_now() - tr;
    if (retro_forward(s, feed, n, 0, logits) != PROTO_OK) {
      fprintf(stderr, "bench_generate: %s\n", retro_last_error());
      goto leave;
    }
    sample_result res;
    if (sample_next(smp, logits, &res) != PROTO_OK) goto leave;
    cur = res.token;
    out[step] = cur;
    if (step == 0) {
      ttft = proto_now() - t0;
      ttft_cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
      retro_stats st0; /* neighbour encoding after this is inside the decode steps */
      retro_state_stats(s, &st0);
      encode_at_ttft = st0.encode_s;
    }
  }
  double total_s = proto_now() - t0, total_cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
  retro_stats st;
  retro_state_stats(s, &st);
  printf(
      "{\"load_s\": %.4f, \"ttft_s\": %.5f, \"total_s\": %.5f, \"n_prompt\": %zu, \"n_gen\": %d, "
      "\"decode_tok_s\": %.3f, \"tok_s\": %.3f, \"retrieval_s\": %.6f, \"encode_s\": %.5f, "
      "\"chunks_encoded\": %d, \"decode_encode_s\": %.5f, \"ttft_cpu_s\": %.5f, \"total_cpu_s\": %.5f, "
      "\"tokens\": [",
      t_load, ttft, total_s, n_prompt, n_gen, n_gen > 1 ? (n_gen - 1) / (total_s - ttft) : 0.0,
      n_gen / total_s, t_retr, st.encode_s, st.chunks_encoded, st.encode_s - encode_at_ttft,
      ttft_cpu, total_cpu);
  for (int i = 0; i < n_gen; i++) printf("%s%d", i ? ", " : "", (int)out[i]);
  printf("]}\n");
  rc = 0;
leave:
  sample_free(smp);
  retro_state_free(s);
  retro_close(r);
  free(prompt);
  free(nb);
  free(logits);
  free(out);
  return rc;
}
