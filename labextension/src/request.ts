import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { API_NAMESPACE } from './tokens';

/** An error the hub answered with: `{error, category}` (docs/hub-api.md). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly category: string,
    readonly status: number
  ) {
    super(message);
  }
}

export type Body = 'json' | 'blob';

/**
 * Call the paraconnect REST API. Authentication and XSRF are ServerConnection's business.
 *
 * @param endPoint route below /paraconnect/api, e.g. `sessions/lab/friends`
 * @param init the fetch options; a `body` object is sent as JSON
 * @param as how to read the answer: JSON (default) or a Blob (bundle downloads)
 */
export async function requestAPI<T>(
  endPoint = '',
  init: Omit<RequestInit, 'body'> & { body?: unknown } = {},
  as: Body = 'json'
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
  const { body, ...rest } = init;
  const request: RequestInit = { ...rest };
  if (body !== undefined) {
    request.body = JSON.stringify(body);
    request.headers = { 'Content-Type': 'application/json', ...(rest.headers ?? {}) };
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, request, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let category = 'HTTPError';
    try {
      const data = await response.json();
      message = data.error ?? data.message ?? message;
      category = data.category ?? category;
    } catch {
      // not JSON (a proxy's error page): keep the status line
    }
    throw new ApiError(message, category, response.status);
  }
  if (as === 'blob') {
    return (await response.blob()) as T;
  }
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

/** The events websocket's URL (with the token where ServerConnection would append one). */
export function eventsURL(endPoint: string): string {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.wsUrl, API_NAMESPACE, endPoint);
  if (settings.appendToken && settings.token) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}
