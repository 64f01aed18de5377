/**
 * The notice strip under the header. The live region is always in the page so that screen
 * readers announce a change of its text; an empty region says nothing.
 */
export function Banner({ unreachable, stale }: { unreachable: boolean; stale: string | null }) {
  return (
    <div className="banners" role="status" aria-live="polite">
      {unreachable ? (
        <p className="banner banner-error" data-banner="unreachable">
          <strong>The API is unreachable.</strong> Live updates are paused and will resume by themselves when it is back.
        </p>
      ) : null}
      {stale ? (
        <p className="banner banner-warning" data-banner="stale">
          <strong>Data is stale.</strong> {stale}
        </p>
      ) : null}
    </div>
  );
}
