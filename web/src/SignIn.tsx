import { useRef, useState, type FormEvent } from 'react';
import { Brand } from './Brand';

/**
 * The sign-in page, shown when the server needs a key to read (READ_API_KEY). The key goes to
 * POST /api/session once and is forgotten; the session cookie it buys is HttpOnly, so no script
 * on the page can read it either.
 */
export function SignIn({ notice, onSignIn }: { notice?: string; onSignIn: (key: string) => Promise<void> }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (key === '') {
      setError('Enter the API key.');
      input.current?.focus();
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await onSignIn(key);
    } catch (failure) {
      setError((failure as Error).message);
      setBusy(false);
      input.current?.select();
    }
  };

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <div className="app-header-inner">
          <Brand />
        </div>
      </header>
      <main id="main">
        <section className="signin card" aria-labelledby="signin-title" data-view="sign-in">
          <h1 id="signin-title">Sign in</h1>
          {notice ? (
            <p className="signin-notice" role="status">
              {notice}
            </p>
          ) : null}
          <p>This service needs a key to show its data. Ask whoever runs it for the read key.</p>
          <form onSubmit={(event) => void submit(event)} noValidate>
            <label htmlFor="api-key">API key</label>
            <input
              ref={input}
              id="api-key"
              name="key"
              type="password"
              autoComplete="current-password"
              autoFocus
              spellCheck={false}
              required
              value={key}
              onChange={(event) => setKey(event.target.value)}
              aria-invalid={error ? true : undefined}
              aria-describedby="api-key-hint api-key-error"
            />
            <p id="api-key-hint" className="hint">
              The service's READ_API_KEY (its API_KEY works too). This browser keeps a session cookie for 12 hours, not the key.
            </p>
            <p id="api-key-error" className="field-error" role="alert">
              {error}
            </p>
            <button type="submit" className="button" disabled={busy}>
              {busy ? 'Signing in…' : 'Sign in'}
            </button>
          </form>
        </section>
      </main>
    </>
  );
}
