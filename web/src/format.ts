/** Display helpers: numbers with units, ages, dates. */

export function num(value: number | undefined | null, digits = 1): string {
  if (value === undefined || value === null || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function withUnit(value: number | undefined | null, unit: string, digits = 1): string {
  const shown = num(value, digits);
  return shown === '—' ? shown : `${shown} ${unit}`;
}

/** "4 s ago", "3 min ago", "2 h ago", "5 d ago". */
export function ago(seconds: number): string {
  if (!Number.isFinite(seconds)) return 'never';
  const s = Math.max(0, Math.round(seconds));
  if (s < 2) return 'just now';
  if (s < 90) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min ago`;
  const h = Math.round(s / 3600);
  if (h < 36) return `${h} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** Hours as "1,200 h (50 d)" so a long life reads at a glance. */
export function hoursAndDays(hours: number | undefined | null): string {
  if (hours === undefined || hours === null || !Number.isFinite(hours)) return '—';
  const h = `${num(hours, 0)} h`;
  return hours >= 48 ? `${h} (${num(hours / 24, 0)} d)` : h;
}

export function dateTime(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}
