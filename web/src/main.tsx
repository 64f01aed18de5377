import { StrictMode, useSyncExternalStore } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { ServicesContext } from './hooks';
import { SessionStore } from './session';
import { SignIn } from './SignIn';
import './styles.css';

// One session, and through it one live connection and one fleet model while the page may read,
// outside React so StrictMode's double effects do not open two streams.
const session = new SessionStore();
session.start();

const signIn = (key: string) => session.signIn(key);
const signOut = () => session.signOut();

function Root() {
  const { phase, keyRequired, notice, services } = useSyncExternalStore(session.subscribe, session.getSnapshot);
  if (phase === 'checking') {
    return (
      <main id="main" aria-busy="true">
        <p className="muted">Loading…</p>
      </main>
    );
  }
  if (phase === 'signed-out' || services === null) return <SignIn notice={notice} onSignIn={signIn} />;
  return (
    <ServicesContext.Provider value={services}>
      <App onSignOut={keyRequired ? signOut : undefined} />
    </ServicesContext.Provider>
  );
}

const root = document.getElementById('root');
if (!root) throw new Error('#root is missing from index.html');
createRoot(root).render(
  <StrictMode>
    <Root />
  </StrictMode>,
);
