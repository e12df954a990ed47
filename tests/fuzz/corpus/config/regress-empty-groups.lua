-- regression: an empty groups table (NULL array handed to qsort: UB, found by fuzz_config)
return { clusters = { dev = { topics = { "trade" }, groups = {} } } }
