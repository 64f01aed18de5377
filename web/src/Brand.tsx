/** The name and mark in the header, on every page (the sign-in page too). */
export function Brand() {
  return (
    <a className="brand" href="#/">
      <svg aria-hidden="true" width="22" height="22" viewBox="0 0 16 16">
        <rect x="1" y="4" width="12" height="8" rx="1.5" fill="currentColor" />
        <rect x="13" y="6.5" width="2" height="3" fill="currentColor" />
      </svg>
      Battery monitor
    </a>
  );
}
