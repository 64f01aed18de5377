import { tempDir } from '../support/temp-dir.js';
import { alarmSuite } from './alarm-suite.js';

alarmSuite('sqlite', { fresh: () => ({ mongodbUri: undefined, dataDir: tempDir() }) });
