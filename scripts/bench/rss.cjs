// Preloaded into each timed process: records its peak RSS (KiB) for the bench.
process.on('exit', () => {
  const file = process.env.INFLUENCE_LENS_RSS_FILE;
  if (file) require('node:fs').writeFileSync(file, String(process.resourceUsage().maxRSS));
});
