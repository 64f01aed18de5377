/** The SQLite tables as the kinds table derives them, read back from a real file. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { ALL_KINDS } from '../../src/records/kinds.js';
import { recordSchemas } from '../../src/records/schemas.js';
import { createSchema } from '../../src/store/sqlite-schema.js';
import { tempDir } from '../support/temp-dir.js';

/** An array (per-cell readings) is JSON text. */
const SQL_TYPE_OF_SCHEMA = { number: 'REAL', integer: 'INTEGER', string: 'TEXT', array: 'TEXT' } as const;

test("a kind's table has a column for each property of its answer schema, typed alike, NOT NULL where required", () => {
  const db = new Database(path.join(tempDir('sqlite-schema-'), 'kinds.sqlite'));
  try {
    createSchema(db);
    for (const kind of ALL_KINDS) {
      const schema = recordSchemas[kind.name];
      const columns = db.pragma(`table_info(${kind.collection})`) as { name: string; type: string; notnull: number; pk: number }[];
      // The store's key is the API's _id; the idempotency key is the store's own, never answered.
      const answered = columns.filter((column) => column.name !== 'idem_key');
      // In any order: the order of columns is the storage layout's to choose.
      assert.deepEqual(
        answered.map((column) => (column.name === 'id' ? '_id' : column.name)).sort(),
        Object.keys(schema.properties).sort(),
        kind.name,
      );
      for (const column of answered) {
        if (column.name === 'id') {
          assert.ok(column.pk > 0, `${kind.collection}.id is the key`);
          continue;
        }
        const property = schema.properties[column.name] as { type: keyof typeof SQL_TYPE_OF_SCHEMA };
        assert.equal(column.type, SQL_TYPE_OF_SCHEMA[property.type], `${kind.collection}.${column.name}`);
        assert.equal(column.notnull === 1, schema.required?.includes(column.name) ?? false, `${kind.collection}.${column.name} NOT NULL`);
      }
    }
  } finally {
    db.close();
  }
});
