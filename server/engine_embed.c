/* engine_embed.c - query embedding with concurrent callers coalesced into
 * one encoder call (srv__embed_queries, engine_priv.h).
 *
 * Why: for a handful of tokens the encoder is bound by reading its weights
 * (19 MB of fp32 for the default 6x256), which it does once per call
 * whatever the batch: two or four queries in one call cost little more
 * than one. Searches by text and embedding requests from several workers
 * therefore share calls.
 *
 * How: nobody waits for company. A caller queues its request; if the
 * encoder is idle it becomes the leader at once and embeds everything
 * queued (up to QUERY_BATCH_TEXTS texts, whole requests, in arrival order);
 * callers arriving meanwhile wait, and when the call ends one of them leads
 * the next batch with whatever has gathered. A vector differs from a lone
 * call's only by float rounding (< 1e-7 measured): each sequence is encoded
 * on its own, only the matrix products are shared.
 *
 * A caller that keeps the other cores busy itself (a hybrid search: its
 * lexical half runs on a thread of its own) asks for one_thread: a batch of
 * its text alone then runs on the leader's thread, not the encoder's pool,
 * whose workers would take the cores the lexical search needs.
 */
#include "engine_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QUERY_BATCH_TEXTS = 64 };

struct srv_embed_req {
  const char *const *texts;
  const size_t *lens; /* NULL: NUL-terminated */
  size_t n;
  float *out; /* n x dim */
  int one_thread;
  int done;
  proto_status st;
  char err[256]; /* the encoder's message, from the leader's thread */
  srv_embed_req *next;
};

/* Embeds the requests of one batch (list linked by next, total texts) and
 * records each one's status; called without q_mu. */
static void run_batch(srv_engine *e, srv_embed_req *first, size_t n_reqs, size_t total) {
  const char **texts = malloc(total * sizeof *texts);
  size_t *lens = malloc(total * sizeof *lens);
  float *out = malloc(total * (size_t)e->dim * sizeof *out);
  proto_status st = PROTO_ENOMEM;
  const char *msg = "out of memory";
  if (texts && lens && out) {
    size_t t = 0;
    srv_embed_req *r = first;
    for (size_t i = 0; i < n_reqs; i++, r = r->next)
      for (size_t j = 0; j < r->n; j++, t++) {
        texts[t] = r->texts[j];
        lens[t] = r->lens ? r->lens[j] : strlen(r->texts[j]);
      }
    st = total == 1 && first->one_thread ? bert_embed_text_here(e->enc, texts[0], lens[0], out)
                                         : bert_embed_texts(e->enc, texts, lens, total, out);
    msg = st == PROTO_OK ? "" : bert_last_error();
  }
  size_t t = 0;
  srv_embed_req *r = first;
  for (size_t i = 0; i < n_reqs; i++, r = r->next) {
    r->st = st;
    snprintf(r->err, sizeof r->err, "%s", msg);
    if (st == PROTO_OK) memcpy(r->out, out + t * e->dim, r->n * (size_t)e->dim * sizeof *out);
    t += r->n;
  }
  free(texts);
  free(lens);
  free(out);
}

proto_status srv__embed_queries(srv_engine *e, const char *const *texts, const size_t *lens,
                                size_t n, float *out, int one_thread) {
  if (n == 0) return PROTO_OK;
  srv_embed_req me = {.texts = texts, .lens = lens, .n = n, .out = out, .one_thread = one_thread};
  pthread_mutex_lock(&e->q_mu);
  if (e->q_tail) e->q_tail->next = &me;
  else e->q_head = &me;
  e->q_tail = &me;
  while (!me.done) {
    if (e->q_busy) {
      pthread_cond_wait(&e->q_cv, &e->q_mu);
      continue;
    }
    /* lead: take whole requests from the head, at least one */
    srv_embed_req *first = e->q_head, *last = first;
    size_t n_reqs = 1, total = first->n;
    while (last->next && total + last->next->n <= QUERY_BATCH_TEXTS) {
      last = last->next;
      total += last->n;
      n_reqs++;
    }
    e->q_head = last->next;
    if (!e->q_head) e->q_tail = NULL;
    e->q_busy = 1;
    pthread_mutex_unlock(&e->q_mu);
    run_batch(e, first, n_reqs, total);
    atomic_fetch_add(&e->n_query_calls, 1);
    atomic_fetch_add(&e->n_query_texts, total);
    pthread_mutex_lock(&e->q_mu);
    srv_embed_req *r = first;
    for (size_t i = 0; i < n_reqs; i++) {
      srv_embed_req *next = r->next; /* r may return and vanish once done */
      r->done = 1;
      r = next;
    }
    e->q_busy = 0;
    pthread_cond_broadcast(&e->q_cv);
  }
  pthread_mutex_unlock(&e->q_mu);
  if (me.st != PROTO_OK) return srv__fail(me.st, "encoder: %s", me.err);
  return PROTO_OK;
}

proto_status srv__query_texts(srv_engine *e, const char *const *texts, const size_t *lens, size_t n,
                              int as_query, srv_query_texts *out) {
  *out = (srv_query_texts){texts, lens, NULL};
  const char *prefix = as_query ? bert_query_prefix(e->enc) : "";
  size_t np = strlen(prefix), chars = 0;
  if (np == 0 || n == 0) return PROTO_OK;
  for (size_t i = 0; i < n; i++) chars += np + (lens ? lens[i] : strlen(texts[i]));
  /* one block: the text pointers, their lengths, then the texts */
  const char **t = malloc(n * (sizeof *t + sizeof(size_t)) + chars);
  if (!t) return srv__fail(PROTO_ENOMEM, "out of memory");
  size_t *l = (size_t *)(void *)(t + n);
  char *at = (char *)(l + n);
  for (size_t i = 0; i < n; i++) {
    size_t len = lens ? lens[i] : strlen(texts[i]);
    memcpy(at, prefix, np);
    memcpy(at + np, texts[i], len);
    t[i] = at;
    l[i] = np + len;
    at += l[i];
  }
  *out = (srv_query_texts){t, l, t};
  return PROTO_OK;
}

void srv__query_texts_free(srv_query_texts *t) {
  free(t->mem);
  *t = (srv_query_texts){NULL, NULL, NULL};
}

proto_status srv__embed_search_texts(srv_engine *e, const char *const *texts, const size_t *lens,
                                     size_t n, float *out, int one_thread) {
  srv_query_texts q;
  proto_status st = srv__query_texts(e, texts, lens, n, 1, &q);
  if (st == PROTO_OK) st = srv__embed_queries(e, q.texts, q.lens, n, out, one_thread);
  srv__query_texts_free(&q);
  return st;
}
