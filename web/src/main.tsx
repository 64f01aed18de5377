import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { FleetStore } from './fleet';
import { ServicesContext } from './hooks';
import { LiveFeed } from './live';
import './styles.css';

// One live connection and one fleet model for the page's lifetime, outside React so StrictMode's
// double effects do not open two streams.
const feed = new LiveFeed();
const fleet = new FleetStore(feed);
fleet.start();

const root = document.getElementById('root');
if (!root) throw new Error('#root is missing from index.html');
createRoot(root).render(
  <StrictMode>
    <ServicesContext.Provider value={{ feed, fleet }}>
      <App />
    </ServicesContext.Provider>
  </StrictMode>,
);
