//! Text drawing for the PNGs: plotters' bitmap backend with text laid out and rasterized here, so
//! the PNGs match the SVGs.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, PxScaleFont, ScaleFont, point};
use plotters::backend::BitMapBackend;
use plotters::prelude::DrawingBackend;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

/// The PNG backend: plotters' bitmap backend, but with text laid out and rasterized here with
/// ab_glyph, each glyph at its own bearing and the text placed the way SVG viewers place it, so
/// the PNG matches the SVG (plotters' ab_glyph drawing ignores bearings and sets text high).
pub(super) struct Raster<'a>(pub(super) BitMapBackend<'a>);

/// DejaVu Sans' x-height per em, which SVG's `ex` unit is.
const EX: f64 = 0.547;

/// The embedded font, parsed once.
fn face() -> Option<&'static FontRef<'static>> {
    static FACE: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| FontRef::try_from_slice(dejavu::sans::regular()).ok())
        .as_ref()
}

/// The font at plotters' text `size` (whose em is size / 1.24 pixels, as in plotters' SVG).
fn scaled(
    size: f64,
) -> Result<(PxScaleFont<&'static FontRef<'static>>, f64), Box<dyn std::error::Error + Send + Sync>>
{
    let face = face().ok_or("the embedded font (DejaVu Sans) does not load")?;
    let em = size / 1.24;
    let units = face.units_per_em().unwrap_or(2048.0);
    let scale = PxScale::from((em as f32) * face.height_unscaled() / units);
    Ok((face.as_scaled(scale), em))
}

/// The width (advances) and height (the em) of `text` at plotters' font `size`, pixels.
pub(super) fn text_size(
    text: &str,
    size: f64,
) -> Result<(i32, i32), Box<dyn std::error::Error + Send + Sync>> {
    let (font, em) = scaled(size)?;
    Ok((advance(&font, text).ceil() as i32, em.round() as i32))
}

/// The advance width of `text`, pixels.
fn advance(font: &PxScaleFont<&FontRef<'_>>, text: &str) -> f32 {
    let mut prev = None;
    let mut pen = 0.0;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            pen += font.kern(p, id);
        }
        pen += font.h_advance(id);
        prev = Some(id);
    }
    pen
}

impl DrawingBackend for Raster<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (w, h) = text_size(text, style.size()).map_err(DrawingErrorKind::FontError)?;
        Ok((w as u32, h as u32))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let (font, em) = scaled(style.size()).map_err(DrawingErrorKind::FontError)?;
        let width = advance(&font, text);
        let anchor = style.anchor();
        let mut pen = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        // Where SVG puts the baseline for the same anchor (plotters' SVG backend sets `dy`).
        let baseline = match anchor.v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.5 * EX * em,
            VPos::Bottom => -0.5 * EX * em,
        } as f32;
        let transform = style.transform();
        let mut prev = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                pen += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), point(pen, baseline));
            pen += font.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let mut result = Ok(());
            outline.draw(|x, y, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (dx, dy) = transform.transform(
                    bounds.min.x as i32 + x as i32,
                    bounds.min.y as i32 + y as i32,
                );
                let color = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                result = self.0.draw_pixel((pos.0 + dx, pos.1 + dy), color);
            });
            result?;
        }
        Ok(())
    }
}
