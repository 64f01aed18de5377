import { tempDir } from '../support/temp-dir.js';
import { webhookSuite } from './webhook-suite.js';

webhookSuite('sqlite', { fresh: () => ({ mongodbUri: undefined, dataDir: tempDir() }) });
