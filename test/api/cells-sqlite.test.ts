import { cellsSuite } from './cells-suite.js';

cellsSuite('sqlite', async () => ({ mongodbUri: undefined }));
