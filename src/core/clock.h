/* Wall-clock and monotonic time helpers. */
#ifndef KQ_CORE_CLOCK_H
#define KQ_CORE_CLOCK_H
#include <stdint.h>

int64_t kq_now_ms(void);   /* wall clock, Unix milliseconds */
int64_t kq_now_sec(void);  /* wall clock, Unix seconds (the protocol's unit) */
uint64_t kq_mono_us(void); /* monotonic microseconds, for latencies */
#endif
