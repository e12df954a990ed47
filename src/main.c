#include <stdio.h>
int main(void) { fprintf(stderr, "kiteq: not built yet\n"); return 1; }
