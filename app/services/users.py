"""Researcher and admin accounts: creation with validation, password login, and the server-side sessions."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import User, UserSession, new_token, token_digest, utcnow
from app.passwords import ROLES, hash_password, verify_password

MIN_PASSWORD_LENGTH = 8
# Deliberately loose: one "@", no spaces, a dot-free domain allowed (``admin@localhost`` in a lab is fine).
# Full RFC 5322 checking needs the email-validator package and buys nothing here: we never send mail.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
# Checked when the email is unknown so that a login with a wrong email costs as long as one with a
# wrong password: response time does not reveal which accounts exist.
_DUMMY_HASH = hash_password("not-a-real-password-0")


class UserError(ValueError):
    """A user could not be created; the message says why and what to do."""


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def create_user(session: Session, *, email: str, password: str, role: str) -> User:
    """Create an account with an argon2-hashed password; raises ``UserError`` for bad input or duplicates."""
    email = normalise_email(email)
    if not _EMAIL_RE.match(email) or len(email) > 254:
        raise UserError(f"'{email}' is not an email address: write it as name@domain.")
    if role not in ROLES:
        raise UserError(f"Unknown role '{role}': use one of {', '.join(ROLES)}.")
    _check_password(password)
    if get_user_by_email(session, email) is not None:
        raise UserError(f"A user with the email {email} already exists.")
    user = User(email=email, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise UserError(f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters.")


def set_password(session: Session, *, user_id: int, password: str) -> User:
    """Give the account a new password and end every one of its logins (a stolen cookie dies with the old one).

    The caller that changed its own password starts a fresh session afterwards (``start_session``).
    """
    _check_password(password)
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"There is no user with id {user_id}.")
    user.password_hash = hash_password(password)
    end_all_sessions(session, user_id=user.id)
    session.flush()
    return user


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == normalise_email(email))).first()


def authenticate(session: Session, *, email: str, password: str) -> User | None:
    """The user whose email and password match, else ``None`` (never says which of the two was wrong)."""
    user = get_user_by_email(session, email)
    if user is None:
        verify_password(_DUMMY_HASH, password or "")
        return None
    return user if verify_password(user.password_hash, password or "") else None


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def count_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.role == "admin")) or 0


# --- server-side login sessions -----------------------------------------------------------------------------


def start_session(session: Session, *, user_id: int) -> str:
    """Record a new login and return its token for the signed cookie (only its SHA-256 is stored).

    The user's expired sessions are removed on the way, so the table holds live logins only.
    """
    now = utcnow()
    session.execute(delete(UserSession).where(UserSession.user_id == user_id, UserSession.expires_at <= now))
    token = new_token(32)
    max_age = timedelta(hours=get_settings().login_max_age_hours)
    session.add(UserSession(user_id=user_id, token_hash=token_digest(token), created_at=now,
                            expires_at=now + max_age))
    session.flush()
    return token


def end_session(session: Session, *, token: str) -> None:
    """Log this one session out, server-side: its cookie, wherever a copy of it is, no longer logs in."""
    session.execute(delete(UserSession).where(UserSession.token_hash == token_digest(token)))


def end_all_sessions(session: Session, *, user_id: int) -> int:
    """Log the user out everywhere; returns how many sessions were ended."""
    result = session.execute(delete(UserSession).where(UserSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)
