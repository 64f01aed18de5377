import { tempDir } from '../support/temp-dir.js';
import { analyticsSuite } from './analytics-suite.js';

analyticsSuite('sqlite', { fresh: () => ({ mongodbUri: undefined, dataDir: tempDir() }) });
