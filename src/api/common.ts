/** Schemas shared by several routes: query parameters and error answers. */
import { Type } from 'typebox';
import { BatteryId } from '../records/schemas.js';

export const MAX_HISTORY_LIMIT = 10_000;
/** Ten years: longer than any retention this service keeps. */
export const MAX_HOURS = 87_600;

export const Hours = (fallback: number) =>
  Type.Number({ exclusiveMinimum: 0, maximum: MAX_HOURS, default: fallback, description: 'How far back, in hours' });

export const BatteryQuery = Type.Object({ battery_id: Type.Optional(BatteryId) }, { additionalProperties: false });

export const HistoryQuery = Type.Object(
  {
    hours: Hours(24),
    limit: Type.Integer({ minimum: 1, maximum: MAX_HISTORY_LIMIT, default: 100, description: 'At most this many records' }),
    battery_id: Type.Optional(BatteryId),
  },
  { additionalProperties: false },
);

export const ErrorDetail = Type.Object(
  { detail: Type.String({ description: 'What went wrong', example: 'No battery data found' }) },
  { title: 'ErrorDetail' },
);

export const ValidationErrorResponse = Type.Object(
  {
    detail: Type.Array(
      Type.Object({
        loc: Type.Array(Type.Union([Type.String(), Type.Integer()]), { example: ['body', 'pack_voltage'] }),
        msg: Type.String({ example: 'field required' }),
        type: Type.String({ example: 'value_error.missing' }),
      }),
    ),
  },
  { title: 'ValidationError', description: 'One entry per bad field, as the original (Pydantic) answered' },
);

export const errorResponses = {
  401: { ...ErrorDetail, description: 'API key missing or wrong' },
  422: { ...ValidationErrorResponse, description: 'Invalid input' },
  503: { ...ErrorDetail, description: 'The store is unreachable' },
};

export const notFound = { ...ErrorDetail, description: 'Nothing stored (for this pack)' };
