// Cron Triggers for the offline host: parse `triggers.crons` expressions and tell which ones
// are due in a given minute (UTC, as Cloudflare runs them).
//
// Supported: five fields (minute hour day-of-month month day-of-week), `*`, lists `a,b`,
// ranges `a-b`, steps `*/n` and `a-b/n`, month names JAN-DEC, weekday names SUN-SAT (0 or 7
// is Sunday), and the `L` (last day of month) / `W` / `#` forms refuse with a clear error.
// When both day-of-month and day-of-week are restricted a day matches if either does
// (the classic cron rule).

const FIELDS = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day-of-month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], base: 1 },
  { name: "day-of-week", min: 0, max: 7, names: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], base: 0 },
];

export class CronError extends Error {}

function value(text, field, expr) {
  const upper = text.toUpperCase();
  if (field.names) {
    const i = field.names.indexOf(upper);
    if (i >= 0) return i + field.base;
  }
  if (!/^\d+$/.test(text)) throw new CronError(`cron "${expr}": ${field.name} value "${text}" is not a number${field.names ? " or a name" : ""}`);
  const n = Number(text);
  if (n < field.min || n > field.max) throw new CronError(`cron "${expr}": ${field.name} value ${n} is outside ${field.min}-${field.max}`);
  return n;
}

function parseField(text, field, expr) {
  if (/[LW#?]/i.test(text) && !(field.names && field.names.some((n) => text.toUpperCase().includes(n)))) {
    throw new CronError(`cron "${expr}": ${field.name} "${text}" uses L/W/#/?, which the offline host does not support`);
  }
  const set = new Set();
  for (const part of text.split(",")) {
    const [range, stepText] = part.split("/");
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) throw new CronError(`cron "${expr}": bad step "${stepText}" in ${field.name}`);
    let lo;
    let hi;
    if (range === "*") [lo, hi] = [field.min, field.name === "day-of-week" ? 6 : field.max];
    else if (range.includes("-")) {
      const [a, b] = range.split("-");
      [lo, hi] = [value(a, field, expr), value(b, field, expr)];
      if (lo > hi) throw new CronError(`cron "${expr}": range ${range} in ${field.name} is reversed`);
    } else {
      lo = value(range, field, expr);
      hi = stepText === undefined ? lo : field.max;
    }
    for (let v = lo; v <= hi; v += step) set.add(field.name === "day-of-week" && v === 7 ? 0 : v);
  }
  return set;
}

/** Parse one expression; throws CronError naming the fault. */
export function parseCron(expr) {
  if (typeof expr !== "string") throw new CronError(`cron ${JSON.stringify(expr)} is not a string`);
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) throw new CronError(`cron "${expr}": needs 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}`);
  const sets = parts.map((p, i) => parseField(p, FIELDS[i], expr));
  return { expr, sets, domStar: parts[2] === "*", dowStar: parts[4] === "*" };
}

/** Whether a parsed cron is due in the minute that contains `date` (UTC). */
export function cronMatches(cron, date) {
  const [minute, hour, dom, month, dow] = cron.sets;
  if (!minute.has(date.getUTCMinutes()) || !hour.has(date.getUTCHours()) || !month.has(date.getUTCMonth() + 1)) return false;
  const domOk = dom.has(date.getUTCDate());
  const dowOk = dow.has(date.getUTCDay());
  if (cron.domStar || cron.dowStar) return domOk && dowOk;
  return domOk || dowOk;
}

/**
 * Fire `run(expr, scheduledTimeMs)` for every due cron at each minute boundary until stop().
 * Returns {stop}. The timer is unref'd: it never keeps the process alive by itself.
 */
export function startCronScheduler(crons, run, now = () => Date.now()) {
  let timer = null;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    const t = now();
    const minute = Math.floor(t / 60_000) * 60_000;
    for (const cron of crons) if (cronMatches(cron, new Date(minute))) run(cron.expr, minute);
    schedule();
  };
  const schedule = () => {
    const t = now();
    const next = (Math.floor(t / 60_000) + 1) * 60_000;
    timer = setTimeout(tick, next - t + 5);
    timer.unref?.();
  };
  if (crons.length) schedule();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
