// How figures are written, in the table and in the chart alike.

/** Three significant digits, whole numbers from 1000 up; '-' when there is no value. */
export function formatNumber(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '-';
  if (Math.abs(value) >= 1000 || Number.isInteger(value)) return Math.round(value).toLocaleString('en-US');
  return Number(value.toPrecision(3)).toString();
}
