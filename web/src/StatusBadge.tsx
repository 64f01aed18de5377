import type { Level } from './status';

const TEXT: Record<Level, string> = { normal: 'Normal', warning: 'Warning', critical: 'Critical' };
const ICON: Record<Level, string> = { normal: '●', warning: '▲', critical: '■' };

/** Status in words and shape as well as colour, so it reads without colour vision. */
export function StatusBadge({ level, stale }: { level: Level; stale?: boolean }) {
  return (
    <span className="badges">
      <span className={`badge badge-${level}`} data-status={level}>
        <span aria-hidden="true">{ICON[level]}</span> {TEXT[level]}
      </span>
      {stale ? (
        <span className="badge badge-stale" data-stale="true">
          <span aria-hidden="true">◌</span> Stale
        </span>
      ) : null}
    </span>
  );
}
