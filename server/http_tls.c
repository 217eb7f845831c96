/* http_tls.c - the served certificate chain and key (http_tls.h). GnuTLS
 * reads them; libmicrohttpd does the rest of TLS. */
#include "http_tls.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHAIN 16             /* certificates in one chain file */
#define MAX_PEM_BYTES (1L << 20) /* a PEM file larger than this is not a chain */

typedef struct tls_creds {
  gnutls_pcert_st chain[MAX_CHAIN];
  unsigned n_chain;
  gnutls_privkey_t key;
  time_t not_after;
  char subject[256];
  struct tls_creds *before; /* kept: a session may still present it */
} tls_creds;

static _Atomic(tls_creds *) current;

/* The whole file into *out (NUL-terminated for GnuTLS's PEM reader). 0, or
 * -1 with err set. */
static int read_pem(const char *what, const char *path, gnutls_datum_t *out, char *err,
                    size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s %s: cannot open it: %s", what, path, strerror(errno));
    return -1;
  }
  long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (size < 0 || size > MAX_PEM_BYTES || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    snprintf(err, errlen, "%s %s: not a PEM file (unreadable, or over 1 MiB)", what, path);
    return -1;
  }
  out->data = malloc((size_t)size + 1);
  size_t got = out->data ? fread(out->data, 1, (size_t)size, f) : 0;
  fclose(f);
  if (!out->data || got != (size_t)size) {
    free(out->data);
    out->data = NULL;
    snprintf(err, errlen, "%s %s: cannot read it", what, path);
    return -1;
  }
  out->data[size] = 0;
  out->size = (unsigned)size;
  return 0;
}

static void creds_free(tls_creds *c) {
  for (unsigned i = 0; i < c->n_chain; i++) gnutls_pcert_deinit(&c->chain[i]);
  if (c->key) gnutls_privkey_deinit(c->key);
  free(c);
}

/* The first certificate's subject and end of validity. */
static void describe_leaf(tls_creds *c) {
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) < 0) return;
  if (gnutls_x509_crt_import(crt, &c->chain[0].cert, GNUTLS_X509_FMT_DER) >= 0) {
    c->not_after = gnutls_x509_crt_get_expiration_time(crt);
    gnutls_datum_t dn = {NULL, 0};
    if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
      snprintf(c->subject, sizeof c->subject, "%.*s", (int)dn.size, (const char *)dn.data);
      gnutls_free(dn.data);
    }
  }
  gnutls_x509_crt_deinit(crt);
}

/* Whether key is the private key of the chain's first certificate: GnuTLS
 * checks that when both are set on one credentials object. */
static int key_matches(const gnutls_datum_t *cert, const gnutls_datum_t *key) {
  gnutls_certificate_credentials_t cred;
  if (gnutls_certificate_allocate_credentials(&cred) < 0) return 0;
  int rc = gnutls_certificate_set_x509_key_mem2(cred, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
  gnutls_certificate_free_credentials(cred);
  return rc >= 0;
}

/* The chain and key of the two PEM texts into a new tls_creds (NULL with
 * err set). */
static tls_creds *creds_import(const char *cert_file, const gnutls_datum_t *cert,
                               const char *key_file, const gnutls_datum_t *key, char *err,
                               size_t errlen) {
  tls_creds *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->n_chain = MAX_CHAIN;
  int rc = gnutls_pcert_list_import_x509_raw(c->chain, &c->n_chain, cert, GNUTLS_X509_FMT_PEM,
                                             GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED);
  if (rc < 0 || c->n_chain == 0) {
    c->n_chain = 0;
    snprintf(err, errlen,
             "--tls-cert %s: not a PEM certificate chain, server certificate first, at most %d "
             "(%s)",
             cert_file, MAX_CHAIN, gnutls_strerror(rc));
    creds_free(c);
    return NULL;
  }
  if ((rc = gnutls_privkey_init(&c->key)) < 0 ||
      (rc = gnutls_privkey_import_x509_raw(c->key, key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
    snprintf(err, errlen, "--tls-key %s: not an unencrypted PEM private key (%s)", key_file,
             gnutls_strerror(rc));
    creds_free(c);
    return NULL;
  }
  if (!key_matches(cert, key)) {
    snprintf(err, errlen, "--tls-key %s is not the private key of --tls-cert %s's certificate",
             key_file, cert_file);
    creds_free(c);
    return NULL;
  }
  describe_leaf(c);
  return c;
}

int http_tls_load(const char *cert_file, const char *key_file, char *err, size_t errlen) {
  gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0};
  tls_creds *c = NULL;
  if (read_pem("--tls-cert", cert_file, &cert, err, errlen) == 0 &&
      read_pem("--tls-key", key_file, &key, err, errlen) == 0)
    c = creds_import(cert_file, &cert, key_file, &key, err, errlen);
  free(cert.data);
  if (key.data) {
    memset(key.data, 0, key.size); /* the private key stays in GnuTLS's copy only */
    free(key.data);
  }
  if (!c) return -1;
  c->before = atomic_exchange(&current, c);
  return 0;
}

int http_tls_present(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                     const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                     gnutls_pcert_st **pcert, unsigned int *pcert_length,
                     gnutls_privkey_t *privkey) {
  (void)session, (void)req_ca_rdn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
  tls_creds *c = atomic_load(&current);
  if (!c) return -1;
  *pcert = c->chain;
  *pcert_length = c->n_chain;
  *privkey = c->key;
  return 0;
}

time_t http_tls_not_after(void) {
  tls_creds *c = atomic_load(&current);
  return c ? c->not_after : 0;
}

const char *http_tls_subject(void) {
  tls_creds *c = atomic_load(&current);
  return c ? c->subject : "";
}
