// Times as people read them: relative ("in 6 days"), with the absolute time on hover.

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'always' });
const DAY = 24 * 3600;

/** "in 6 days", "3 hours ago", "just now": days up to three months, as people count
 * an expiry; months and years past that. */
export function relative(iso, now = Date.now()) {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return 'just now';
  const [unit, size] = abs < 3600 ? ['minute', 60]
    : abs < DAY ? ['hour', 3600]
      : abs < 90 * DAY ? ['day', DAY]
        : abs < 730 * DAY ? ['month', 30 * DAY]
          : ['year', 365 * DAY];
  return rtf.format(Math.round(seconds / size), unit);
}

/** The local date and time, and UTC. */
export function absolute(iso) {
  const d = new Date(iso);
  const local = d.toLocaleString('en', { dateStyle: 'medium', timeStyle: 'short' });
  return `${local} (${d.toISOString().replace('.000Z', 'Z')})`;
}

/** A `time` element: relative, absolute in its title; `none` when there is no time. */
export function timeEl(iso, none = 'never') {
  if (!iso) return document.createTextNode(none);
  const t = document.createElement('time');
  t.dateTime = iso;
  t.title = absolute(iso);
  t.textContent = relative(iso);
  return t;
}

/** Whether `iso` is in the future and within `days`. */
export function within(iso, days, now = Date.now()) {
  if (!iso) return false;
  const left = new Date(iso).getTime() - now;
  return left > 0 && left <= days * 24 * 3600 * 1000;
}
