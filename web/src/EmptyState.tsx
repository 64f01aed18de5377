/** What a new user sees before any reading has arrived: how to send one. */
export function EmptyState({ batteryId }: { batteryId?: string }) {
  const id = batteryId ?? 'pack-1';
  const origin = typeof window === 'undefined' ? 'http://localhost:8000' : window.location.origin;
  const curl = `curl -X POST ${origin}/api/battery-data \\
  -H 'Content-Type: application/json' \\
  -d '{"pack_voltage":398.2,"pack_current":-12.5,"cell_temp":31.2,"battery_id":"${id}"}'`;
  return (
    <section className="empty card" aria-labelledby="empty-title">
      <h2 id="empty-title">{batteryId ? `No readings from ${batteryId} yet` : 'No battery data yet'}</h2>
      <p>Readings appear here the moment they arrive. To send some, start the simulator:</p>
      <pre>
        <code>npx battery-monitor simulate</code>
      </pre>
      <p>
        (from a checkout: <code>node dist/cli.js simulate</code>), or post a reading yourself:
      </p>
      <pre>
        <code>{curl}</code>
      </pre>
      <p className="muted">
        Battery management systems can also stream binary frames to TCP port 23456 or JSON messages to port 23457. See the{' '}
        <a href="/docs">API documentation</a> for every endpoint.
      </p>
    </section>
  );
}
