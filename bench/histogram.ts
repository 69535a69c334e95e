// Latency histogram with logarithmic buckets (about 2 % wide): constant memory however many
// deliveries are measured, and histograms from several generator processes add up exactly.

const PER_OCTAVE = 32;
const BUCKETS = 40 * PER_OCTAVE; // up to 2^40 µs, far beyond any run

function bucketOf(us: number): number {
  if (us < 1) return 0;
  return Math.min(BUCKETS - 1, 1 + Math.floor(Math.log2(us) * PER_OCTAVE));
}

/** The middle of a bucket, in µs. */
function valueOf(bucket: number): number {
  if (bucket === 0) return 0.5;
  return 2 ** ((bucket - 0.5) / PER_OCTAVE);
}

export interface HistogramData {
  counts: number[];
  maxUs: number;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  private maxUs = 0;
  total = 0;

  record(us: number): void {
    this.counts[bucketOf(us)]!++;
    this.total++;
    if (us > this.maxUs) this.maxUs = us;
  }

  /** A compact form for sending between processes (trailing empty buckets dropped). */
  data(): HistogramData {
    let end = BUCKETS;
    while (end > 0 && this.counts[end - 1] === 0) end--;
    return { counts: Array.from(this.counts.subarray(0, end)), maxUs: this.maxUs };
  }

  add(data: HistogramData): void {
    data.counts.forEach((count, bucket) => {
      this.counts[bucket]! += count;
      this.total += count;
    });
    this.maxUs = Math.max(this.maxUs, data.maxUs);
  }

  /** The value below which a fraction `q` (0..1) of the samples lie, in µs; NaN if empty. */
  quantile(q: number): number {
    if (this.total === 0) return NaN;
    const rank = q * this.total;
    let seen = 0;
    for (let bucket = 0; bucket < BUCKETS; bucket++) {
      seen += this.counts[bucket]!;
      if (seen >= rank && this.counts[bucket]! > 0) return Math.min(valueOf(bucket), this.maxUs);
    }
    return this.maxUs;
  }

  get max(): number {
    return this.total === 0 ? NaN : this.maxUs;
  }
}
