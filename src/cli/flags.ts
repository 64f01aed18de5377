/** Flags of a sub-command: parsed strictly, with its help text on --help and on a usage error. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;
type Flags<T extends Options> = ReturnType<typeof parseArgs<{ args: string[]; strict: true; allowPositionals: false; options: T }>>['values'];

/**
 * Answers the parsed flags, or undefined once it has printed the help (--help: exit code 0; a bad
 * flag: the error, the help, exit code 2).
 */
export function parseFlags<const T extends Options>(args: string[], options: T, help: string): Flags<T> | undefined {
  let values: Flags<T>;
  try {
    values = parseArgs({ args, strict: true, allowPositionals: false, options }).values;
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${help}`);
    process.exitCode = 2;
    return undefined;
  }
  if ((values as { help?: boolean }).help) {
    console.log(help);
    return undefined;
  }
  return values;
}
