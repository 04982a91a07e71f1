"""Pure metrics logic: capability (XmR) charts, signals, percentiles, time windows. No I/O."""
