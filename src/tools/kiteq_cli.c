#include <stdio.h>
int main(void) { fprintf(stderr, "kiteq-cli: not built yet\n"); return 1; }
