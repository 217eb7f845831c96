/* http_tls.h - HTTPS for `retro serve`: the certificate chain and private
 * key of --tls-cert and --tls-key, checked when read, and handed to each TLS
 * handshake by libmicrohttpd's certificate callback, so that SIGHUP can put
 * renewed files in place without a restart. */
#ifndef RETRO_HTTP_TLS_H
#define RETRO_HTTP_TLS_H

#include <gnutls/abstract.h>
#include <stddef.h>
#include <time.h>

/* Reads and checks the PEM files (the certificate chain, server certificate
 * first; its unencrypted private key) and, when both are good, makes them
 * the ones the next handshakes present. Earlier ones stay allocated while
 * the process lives (a few KiB each), since sessions begun with them may
 * still hold them. 0, or -1 with the problem in err (what was served
 * before is served still). */
int http_tls_load(const char *cert_file, const char *key_file, char *err, size_t errlen);

/* What libmicrohttpd calls for the certificate of each handshake
 * (MHD_OPTION_HTTPS_CERT_CALLBACK): the chain and key loaded last, whatever
 * the client asked for (one certificate, no choice by SNI). */
gnutls_certificate_retrieve_function2 http_tls_present;

/* The served certificate's subject and end of validity (0 when none is
 * loaded), for the log and /metrics. */
time_t http_tls_not_after(void);
const char *http_tls_subject(void);

#endif
