/* main.c - placeholder until the CLI is written. */
#include <stdio.h>
int main(void) { fputs("retro: not built yet\n", stderr); return 1; }
