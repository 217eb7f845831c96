/* engine_nb.c - placeholder */
typedef int srv_placeholder_nb;
