/**
 * Whether the page may read, and the live services while it may. With READ_API_KEY set on the
 * server the page asks for the key once and trades it for an HttpOnly session cookie (POST
 * /api/session) that its fetches and the live stream then carry; the key itself is never kept.
 * Lives outside React, like the feed and the fleet, so that StrictMode's double effects neither
 * check twice nor open two streams. Read with useSyncExternalStore.
 */
import { fetchSession, onUnauthorized, signIn, signOut } from './api';
import { AlarmsStore } from './alarms';
import { FleetStore } from './fleet';
import type { AppServices } from './hooks';
import { LiveFeed } from './live';

export interface SessionSnapshot {
  /** checking: asking the API; signed-out: the sign-in form; ready: the dashboard. */
  phase: 'checking' | 'signed-out' | 'ready';
  /** The server needs a key to read: the page offers to sign out. */
  keyRequired: boolean;
  /** Why the sign-in form shows again (signed out, session ended). */
  notice?: string;
  services: AppServices | null;
}

export class SessionStore {
  private snapshot: SessionSnapshot = { phase: 'checking', keyRequired: false, services: null };
  private readonly listeners = new Set<() => void>();

  start(): void {
    // Any read answered 401 means the session ended (expired, or the server's key changed).
    onUnauthorized(() => this.ended());
    void this.check();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): SessionSnapshot => this.snapshot;

  /** Throws the API's message (a wrong key answers 401) for the form to show. */
  async signIn(key: string): Promise<void> {
    await signIn(key);
    this.ready(true);
  }

  /** Throws when the API could not clear the cookie: the page then stays signed in, as it is. */
  async signOut(): Promise<void> {
    await signOut();
    this.stopServices();
    this.set({ phase: 'signed-out', keyRequired: true, notice: 'You are signed out.', services: null });
  }

  private async check(): Promise<void> {
    try {
      const status = await fetchSession();
      if (status.key_required && !status.signed_in) {
        this.set({ phase: 'signed-out', keyRequired: true, services: null });
      } else {
        this.ready(status.key_required);
      }
    } catch {
      // The API is unreachable: show the dashboard, which says so and recovers by itself; a 401
      // later brings the sign-in form.
      this.ready(false);
    }
  }

  private ended(): void {
    if (this.snapshot.phase !== 'ready') return;
    this.stopServices();
    this.set({ phase: 'signed-out', keyRequired: true, notice: 'Your session has ended: sign in again.', services: null });
  }

  /** The stream was refused; EventSource hides the status, so ask whether the session is still good. */
  private async streamRefused(): Promise<void> {
    try {
      const status = await fetchSession();
      if (status.key_required && !status.signed_in) this.ended();
    } catch {
      // Unreachable: the feed retries and the page already says the API is unreachable.
    }
  }

  private ready(keyRequired: boolean): void {
    let services = this.snapshot.services;
    if (services === null) {
      const feed = new LiveFeed();
      const fleet = new FleetStore(feed);
      feed.onRefused(() => void this.streamRefused());
      const alarms = new AlarmsStore(feed);
      fleet.start();
      alarms.start();
      services = { feed, fleet, alarms };
    }
    this.set({ phase: 'ready', keyRequired, services });
  }

  private stopServices(): void {
    const services = this.snapshot.services;
    if (services === null) return;
    services.fleet.stop();
    services.alarms.stop();
    services.feed.stop();
  }

  private set(snapshot: SessionSnapshot): void {
    this.snapshot = snapshot;
    for (const listener of this.listeners) listener();
  }
}
