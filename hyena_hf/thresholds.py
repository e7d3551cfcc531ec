"""Quality thresholds shared by the library and the command line (no heavy imports: ``hyena-hf --help`` reads them)."""

# Largest per-layer relative L2 filter error `distill` accepts by default. In
# benchmarks/results/distill_quality_cpu.json the models whose layers all stayed below it (N >= 16: at most 0.16)
# kept the KL from the original within ~1e-3 nats/token, while N = 8 (layers up to 0.35) did not (0.014).
DISTILL_MAX_ERROR = 0.2
