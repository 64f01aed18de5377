import type { MutableRefObject } from 'react';
import uPlot from 'uplot';

/**
 * Draws a uPlot chart into `element`, keeps it as wide as the element (height fixed), and answers
 * the effect's cleanup. The charts (TimeChart, HealthChart, CellChart) rebuild the plot only when
 * what it shows changes, and pass new data through `plot.current.setData`.
 */
export function mountPlot(options: uPlot.Options, data: uPlot.AlignedData, element: HTMLElement, height: number, plot: MutableRefObject<uPlot | null>): () => void {
  const instance = new uPlot(options, data, element);
  plot.current = instance;
  const observer = new ResizeObserver(() => {
    const width = element.clientWidth;
    if (width > 0 && width !== instance.width) instance.setSize({ width, height });
  });
  observer.observe(element);
  return () => {
    observer.disconnect();
    instance.destroy();
    plot.current = null;
  };
}
